"""A team's own tools, end to end on the real deployment, around one small job:

- experiment trackers: the job asks for TensorBoard, W&B (the deployment runs it offline) and
  MLflow on a tracking server that the deployment allows but that is down. The job succeeds;
  the MLflow failure is one `warn` event without the URI's credentials; the TensorBoard logs
  come back as the job's result file, downloaded and read with TensorBoard's own reader,
  holding the metrics the API serves; the W&B run is in the job's folder;
- webhooks: the team subscribes over HTTP before the job, and the worker's maintenance process
  posts the signed succeeded and checkpoint events to a receiver in this process, which verifies
  them with the `standardwebhooks` library.

(One job for both: each costs a training run on a busy machine.)"""

import io
import json
import tarfile
import time

import pytest
from servicekit import JOBS, free_port
from trackerkit import scalars, wandb_records
from webhook_receiver import Receiver

HOOKS = "/v1/webhooks"
EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.checkpoint.created"]


@pytest.fixture(scope="module")
def tooled_job(service, target_jsonl, replay_jsonl):
    """(team, the succeeded job, its fine-tune file id, the webhook, the receiver's record)."""
    team = service.team("team-tools")
    target = team.processed_file(target_jsonl, "fine-tune")["id"]
    replay = team.processed_file(replay_jsonl, "replay")["id"]
    receiver = Receiver(free_port(), secret="")
    hook = team.ok(team.post(HOOKS, json={"url": receiver.url, "events": EVENTS}))
    receiver.secret = hook["secret"]
    receiver.start()
    try:
        (down,) = json.loads(service.env["REPLAYFT_MLFLOW_TRACKING_URIS"])
        body = team.tiny_job(target, replay, n_epochs=0.25)
        body["method"]["supervised"]["hyperparameters"]["checkpoint_interval"] = 4
        body["integrations"] = [
            {"type": "tensorboard"},
            {"type": "mlflow", "mlflow": {"tracking_uri": down, "experiment": "e2e"}},
            {"type": "wandb", "wandb": {"project": "e2e", "tags": ["service"]}},
        ]
        job = team.wait_job(team.create_job(body)["id"], "succeeded")
        deadline = time.monotonic() + 60
        while not any(e["type"] == EVENTS[0] for e in list(receiver.received)):
            assert time.monotonic() < deadline, (receiver.received, receiver.refused)
            time.sleep(0.2)
    finally:
        receiver.stop()
    yield team, job, target, hook, receiver
    team.close()


def test_a_job_logs_to_its_trackers_and_a_tracker_that_is_down_only_warns(
    service, tooled_job, tmp_path
):
    team, job, target, _, _ = tooled_job
    assert [i["type"] for i in job["integrations"]] == ["tensorboard", "mlflow", "wandb"]

    events = team.list_all(f"{JOBS}/{job['id']}/events")
    warnings = [e["message"] for e in events if e["level"] == "warn"]
    assert len(warnings) == 1 and warnings[0].startswith("MLflow could not start"), warnings
    assert "pw-e2e" not in warnings[0]  # the URI's credentials never reach an event

    # the TensorBoard log directory, as a result file
    (result_id,) = job["result_files"]
    result = team.ok(team.get(f"/v1/files/{result_id}"))
    assert result["purpose"] == "fine-tune-results" and result["status"] == "processed", result
    content = team.get(f"/v1/files/{result_id}/content")
    assert content.status_code == 200 and len(content.content) == result["bytes"]
    with tarfile.open(fileobj=io.BytesIO(content.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    board = scalars(tmp_path / "tensorboard")
    metrics = team.metrics(job["id"])
    for key in ("train_loss", "train_loss_target", "train_loss_generic", "lr"):
        want = [(r["step"], r[key]) for r in metrics if r["type"] == "train"]
        assert [s for s, _ in board[key]] == [s for s, _ in want], key
        # TensorBoard keeps float32
        assert [v for _, v in board[key]] == pytest.approx([v for _, v in want], rel=1e-6), key
    evals = [(r["step"], r["val_loss_target"]) for r in metrics if r["type"] == "eval"]
    assert [s for s, _ in board["val_loss_target"]] == [s for s, _ in evals]
    assert "summary/target_gain" in board

    # W&B, offline: the run's transaction log in the job's folder
    (run_dir,) = (service.data_dir / "jobs" / job["id"] / "wandb").glob("offline-run-*")
    records = wandb_records(run_dir)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds.count("history") == job["progress"]["total_steps"] + 1, kinds  # + step 0
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == job["id"] and run.project == "e2e" and list(run.tags) == ["service"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["spec"]["training_file"] == [f"files/{target}.jsonl"], config["spec"]
    assert config["plan"]["total_steps"] == job["progress"]["total_steps"]


def test_a_job_that_succeeds_is_posted_signed_to_the_teams_webhook(tooled_job):
    team, job, _, hook, receiver = tooled_job
    events = EVENTS
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
