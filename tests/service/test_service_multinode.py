"""A job on two machines: two training workers, one torchrun agent each, meeting at the
rendezvous of the worker that claimed the job (node 0). On this one host the "machines" share
the data folder the way real ones share a network filesystem."""

import os
import signal

from servicekit import JOBS, Team, assert_same_training, with_distributed

# the job's own wait for its machines, far below the session deployment's
# REPLAYFT_RENDEZVOUS_TIMEOUT (servicekit.RENDEZVOUS_TIMEOUT_S): the test waits it out in full
SHORT_RENDEZVOUS_S = 8


def two_machine_body(body: dict, **distributed) -> dict:
    return with_distributed(body, strategy="ddp", gpus_per_node=1, nodes=2, **distributed)


def test_a_job_without_enough_workers_fails_naming_nodes(service, team: Team, team_files):
    """Two machines asked for while the session has one training worker: that worker leads,
    nobody takes the join task, the rendezvous times out (after the job's own
    `rendezvous_timeout`, not the deployment's) and the job fails with an error that names the
    field. The join task left in the queue is dropped once the job has failed."""
    assert len(service.training_workers()) == 1
    body = two_machine_body(
        team.tiny_job(*team_files, n_epochs=0.2), rendezvous_timeout=SHORT_RENDEZVOUS_S
    )
    job = team.create_job(body)
    distributed = job["method"]["supervised"]["hyperparameters"]["distributed"]
    assert distributed["rendezvous_timeout"] == SHORT_RENDEZVOUS_S, job
    job = team.wait_job(job["id"], "failed", timeout=SHORT_RENDEZVOUS_S + 240)
    error = job["error"]
    assert error["code"] == "nodes_unavailable", job
    assert error["param"] == "hyperparameters.distributed.nodes", job
    assert (
        f"only 1 of the 2 machines this job needs joined within {SHORT_RENDEZVOUS_S}s"
        in (error["message"])
    ), job
    # the stale join task reaches the (now idle) worker, which must not train anything for it
    team.wait_job(team.create_job(team.tiny_job(*team_files, n_epochs=0.1))["id"], "succeeded")
    messages = [e["message"] for e in team.events(job["id"])]
    assert not any(m.startswith("Machine 1 of 2 joined") for m in messages), messages


def test_bad_node_count_is_a_400_naming_it(team: Team, team_files):
    body = two_machine_body(team.tiny_job(*team_files, n_epochs=0.1))
    body["method"]["supervised"]["hyperparameters"]["distributed"]["nodes"] = 0
    resp = team.post(JOBS, json=body)
    assert resp.status_code == 400, resp.text
    param = "method.supervised.hyperparameters.distributed.nodes"  # the spec's bound, in the schema
    assert resp.json()["error"]["param"] == param, resp.text


def test_two_machine_job_pauses_resumes_and_matches_one_process(service, team: Team, team_files):
    body = team.tiny_job(*team_files, n_epochs=0.6, seed=21)  # ~20 steps
    second = service.start_worker("training")  # the session has one training worker
    try:
        job = team.create_job(two_machine_body(body))
        total = team.pause_mid_run(job["id"])
        team.ok(team.post(f"{JOBS}/{job['id']}/resume"))  # a new attempt: both machines again
        job = team.wait_job(job["id"], "succeeded")
    finally:
        second.stop()

    twin = team.wait_job(team.create_job(body)["id"], "succeeded")  # one process, uninterrupted
    assert_same_training(team.metrics(job["id"]), team.metrics(twin["id"]), total)
    distributed = job["method"]["supervised"]["hyperparameters"]["distributed"]
    assert distributed == {"strategy": "ddp", "gpus_per_node": 1, "nodes": 2}, job
    assert twin["method"]["supervised"]["hyperparameters"]["distributed"] is None, twin
    messages = [e["message"] for e in team.events(job["id"])]
    leads = [m for m in messages if m.startswith("Training on 2 machines x 1 processes (ddp)")]
    joins = [m for m in messages if m.startswith("Machine 1 of 2 joined")]
    assert len(leads) == len(joins) == 2, messages  # once per attempt


def node_ranks(artifact_marker: str) -> list[int]:
    """Pids of the training processes (not their torchrun agent) of machine 1 of a job."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "agent" in args or "run" not in args:
            continue
        if any(a.startswith("--spec=") and artifact_marker in a for a in args):
            found.append(int(entry))
    return found


def test_a_machine_lost_mid_run_is_requeued_and_resumes(service, team: Team, team_files):
    """Machine 1's training processes are killed mid-run (what a lost machine looks like to
    the others): the leader's ranks fail, the job goes back to the queue, a new rendezvous of
    two workers resumes it from its last checkpoint, and every step appears exactly once."""
    body = two_machine_body(team.tiny_job(*team_files, n_epochs=0.8, seed=23))  # ~26 steps
    second = service.start_worker("training")
    try:
        job_id = team.create_job(body)["id"]

        def past_a_checkpoint(job):
            ckpts = team.checkpoints(job_id) if job["status"] == "running" else []
            return bool(ckpts) and job["progress"]["step"] > ckpts[-1]["step_number"]

        job = team.poll(
            lambda: team.job(job_id), past_a_checkpoint, 300, "a step past a checkpoint"
        )
        total = job["progress"]["total_steps"]
        assert job["progress"]["step"] < total, "finished before a machine could be lost"
        marker = f"{job_id}/.node-1/"
        victims = node_ranks(marker)
        assert victims, "machine 1's training process was not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        job = team.wait_job(job_id, "succeeded")
    finally:
        second.stop()

    messages = [e["message"] for e in team.events(job_id)]
    assert any(m.startswith("A machine of this job failed") for m in messages), messages
    assert any(m.startswith("Resuming from the checkpoint at step") for m in messages), messages
    assert sum(m.startswith("Machine 1 of 2 joined") for m in messages) == 2, messages
    steps = sorted(r["step"] for r in team.metrics(job_id) if r.get("train_loss") is not None)
    assert steps == list(range(1, total + 1)), steps
