"""Webhooks end to end on the real deployment: a team subscribes over HTTP, a small job trains on
a worker, and the worker's maintenance process posts the signed events to a receiver in this
process, which verifies them with the `standardwebhooks` library."""

import time

from servicekit import Team, free_port
from webhook_receiver import Receiver

HOOKS = "/v1/webhooks"


def test_a_job_that_succeeds_is_posted_signed_to_the_teams_webhook(team: Team, team_files):
    target, replay = team_files
    receiver = Receiver(free_port(), secret="")
    events = ["fine_tuning.job.succeeded", "fine_tuning.job.checkpoint.created"]
    hook = team.ok(team.post(HOOKS, json={"url": receiver.url, "events": events}))
    receiver.secret = hook["secret"]
    receiver.start()
    try:
        body = team.tiny_job(target, replay, n_epochs=0.25)
        body["method"]["supervised"]["hyperparameters"]["checkpoint_interval"] = 4
        job = team.wait_job(team.create_job(body)["id"], "succeeded")
        deadline = time.monotonic() + 60
        while not any(e["type"] == events[0] for e in list(receiver.received)):
            assert time.monotonic() < deadline, (receiver.received, receiver.refused)
            time.sleep(0.2)
    finally:
        receiver.stop()

    assert receiver.refused == []
    [done] = [e for e in receiver.received if e["type"] == "fine_tuning.job.succeeded"]
    assert done["data"]["id"] == job["id"] and done["data"]["status"] == "succeeded", done
    assert done["data"]["fine_tuned_model"] == job["fine_tuned_model"]
    assert done["data"]["trained_tokens"] == job["trained_tokens"]
    saved = [e["data"] for e in receiver.received if e["type"] == events[1]]
    total = job["progress"]["total_steps"]
    assert sorted(c["step_number"] for c in saved) == sorted({*range(4, total + 1, 4), total})
    assert all(c["fine_tuning_job_id"] == job["id"] for c in saved), saved
    assert len(receiver.ids()) == len(receiver.received)  # each event once

    log = team.list_all(f"{HOOKS}/{hook['id']}/deliveries")
    assert {d["event_id"] for d in log} == set(receiver.ids())
    assert {(d["status"], d["attempts"], d["last_status_code"]) for d in log} == {
        ("delivered", 1, 204)
    }, log
