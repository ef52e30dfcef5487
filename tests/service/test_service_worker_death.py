"""A worker SIGKILLed mid-job: the job is picked up again, resumes from its last checkpoint and
finishes; it never runs twice at once."""

import re

from servicekit import Team


def test_killed_worker_job_resumes_from_its_checkpoint(service, team: Team, team_files):
    running = service.training_workers()
    assert len(running) == 1, "the session should have exactly one training worker here"
    doomed = running[0]

    # ~100 steps: long enough to be seen running past a checkpoint on an idle machine (26 steps
    # ran in 4 s, between two looks)
    job = team.create_job(team.tiny_job(*team_files, n_epochs=3, seed=5))
    job_id = job["id"]

    # wait for a checkpoint, then for a step past it, so some work after the checkpoint is lost
    def after_a_checkpoint(job):
        ckpts = team.checkpoints(job_id) if job["status"] == "running" else []
        return bool(ckpts) and job["progress"]["step"] > ckpts[-1]["step_number"]

    job = team.poll(lambda: team.job(job_id), after_a_checkpoint, 300, "a step past a checkpoint")
    total = job["progress"]["total_steps"]
    assert job["progress"]["step"] < total, "the job finished before the worker could be killed"
    saved = team.checkpoints(job_id)[-1]["step_number"]
    doomed.kill()
    killed_at_step = team.job(job_id)["progress"]["step"]

    # two fresh workers compete for the lost job: only one may run it
    replacements = [service.start_worker(), service.start_worker()]
    seen: list[tuple[str, int]] = []

    def observe():
        j = team.job(job_id)
        seen.append((j["status"], j["progress"]["step"]))
        return j

    def finished(j):
        if j["status"] in ("failed", "cancelled"):
            team.fail(f"job ended {j['status']} after the worker was killed: {j}")
        return j["status"] == "succeeded"

    try:
        job = team.poll(observe, finished, 300, "the job to finish on a new worker")
    finally:
        replacements[1].stop()  # one spare is enough for the rest of the session

    # Progress reads the killed run's last step until the new run reports; then it may step
    # back once, to the step after the checkpoint, and from there only goes up. Going back to
    # before the checkpoint means the work was redone; going back again, that two runs interleave.
    steps = [s for status, s in seen if status == "running"]
    drops = [i for i in range(1, len(steps)) if steps[i] < steps[i - 1]]
    assert min(steps) >= saved and len(drops) <= 1, (saved, seen)
    messages = [e["message"] for e in team.events(job_id)]
    assert any(re.search(r"resum", m, re.I) for m in messages), messages
    # the metrics read as one run: each step exactly once
    train_steps = sorted(r["step"] for r in team.metrics(job_id) if r.get("train_loss") is not None)
    repeated = sorted({s for s in train_steps if train_steps.count(s) > 1})
    missing = sorted(set(range(1, total + 1)) - set(train_steps))
    assert not repeated and not missing, (
        f"train metrics should hold steps 1..{total} once each; repeated {repeated}, missing "
        f"{missing} (checkpoint at step {saved}, killed at step {killed_at_step})"
    )
    assert job["progress"]["step"] == total and job["error"] is None, job
