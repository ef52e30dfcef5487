"""A cancel reaches a running job within one step, and interrupts a long step.

Cancelling a sweep once left a member training for about 5 more minutes: the engine asks
`should_stop` only between steps, so a long step (or eval, or data preparation) ran to its end
after the cancel.
"""

import time

from servicekit import TINY, Team

SWEEPS = "/v1/sweeps"


def train_steps(team: Team, job_id: str) -> list[int]:
    return [r["step"] for r in team.metrics(job_id) if r.get("type") == "train"]


def test_sweep_cancel_interrupts_a_members_long_step(team: Team, team_files):
    target, replay = team_files
    # long steps whatever the machine: 384 micro-batches of one short sequence, so a step takes
    # 10 s or more on this 2-core machine (idle), well past the ~3 s a cancel may take to
    # interrupt it (heartbeat poll + 1 s grace); an eval and a checkpoint after each step
    hp = {"total_steps": 3, "batch_size": 384, "micro_batch_size": 1, "seq_len": 16}
    hp["eval_sequences"] = 4
    body = {
        "model": TINY,
        "training_file": target,
        "replay": {"dataset": replay},
        "seed": 7,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        "replay_fractions": [0],
        "reference_subsets": [0.25, 0.5, 1],
    }
    sweep = team.ok(team.post(SWEEPS, json=body))
    members = [m["job_id"] for m in sweep["members"]]
    team.job_ids += members  # cancelled at teardown if the test fails early

    def past_step_1():
        # the member that finished step 1 and its checkpoint: it is now inside step 2
        for job_id in members:
            if any(e["message"] == "Checkpoint saved at step 1." for e in team.events(job_id)):
                return job_id
        return None

    running = team.poll(past_step_1, lambda found: found is not None, 300, "a member's step 1")
    time.sleep(1)  # past should_stop(1): the cancel lands inside step 2
    step_at_cancel = max(train_steps(team, running))
    cancelled = team.ok(team.post(f"{SWEEPS}/{sweep['id']}/cancel"))
    assert all(m["status"] == "cancelled" for m in cancelled["members"]), cancelled

    def stopped(events):
        return any(
            e["message"].startswith(("Training stopped", "Training interrupted")) for e in events
        )

    team.poll(lambda: team.events(running), stopped, 120, f"member {running} to stop training")
    steps = train_steps(team, running)
    assert max(steps) <= step_at_cancel, (
        f"member {running} trained on after the cancel: steps {steps}, cancelled after "
        f"step {step_at_cancel}"
    )
    assert team.job(running)["status"] == "cancelled"
