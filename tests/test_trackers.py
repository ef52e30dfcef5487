"""worker.trackers against the real libraries, fed the records of a real (tiny) training run:
W&B in offline mode (its transaction log read back with W&B's own protobuf records), MLflow on a
local SQLite store (read back with MlflowClient), TensorBoard event files (read back with
TensorBoard's EventAccumulator). And the faults: a tracker that cannot reach its server or
never answers warns and stops, the others and the caller go on, and no secret is in a warning."""

from __future__ import annotations

import json
import socket
import tarfile
import time
from pathlib import Path

import pytest
from trackerkit import scalars, wandb_records

from control.settings import Settings
from replay_engine.spec import parse_spec
from replay_engine.trainer import train
from worker.trackers import (
    RunContext,
    TensorBoardTracker,
    build_trackers,
    numeric_items,
    pack_tensorboard,
    public_config,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data, gsm8k_file, cache_dir):
    """The metric records and plan of a 6-step run with replay (both sources)."""
    root = tmp_path_factory.mktemp("tracked-run")
    generic = root / "generic.jsonl"
    c4 = (shared_data / "c4_sample" / "c4_demo.jsonl").read_text().splitlines()[:60]
    generic.write_text("\n".join(c4) + "\n")
    spec = parse_spec(
        {
            "model": "replayft/llama-tiny",
            "training_file": str(gsm8k_file(root / "target.jsonl", n=40)),
            "replay": {"dataset": str(generic), "fraction": 0.25},
            "n_epochs": 0.1,
            "total_steps": 6,
            "batch_size": 8,
            "seq_len": 64,
            "eval_interval": 3,
            "eval_sequences": 8,
            "cache_dir": str(cache_dir),
        }
    )
    out = root / "out"
    result = train(spec, out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in records} == {"train", "eval", "summary"}
    meta = json.loads((result.final_checkpoint / "meta.json").read_text())
    return {"records": records, "spec": spec.model_dump(mode="json"), "plan": meta["plan"]}


def context(tmp_path: Path, run, job_id: str = "ftjob-tracked", resume_step: int = 0):
    config = public_config(run["spec"], run["plan"], tmp_path, job_id=job_id)
    return RunContext(
        job_id=job_id,
        name="tracked run",
        config=config,
        artifact_dir=tmp_path / "job",
        resume_step=resume_step,
        group="sweep-1",
    )


def settings(tmp_path: Path, **values) -> Settings:
    return Settings(data_dir=tmp_path / "data", **values)


def feed(trackers, records, outcome="succeeded", timeout=60.0):
    for record in records:
        trackers.on_metrics(record)
    finished = trackers.close(outcome, timeout)
    return finished, trackers.take_warnings()


def series(records, key):
    """(step, value) of `key` in the train and eval records, as metrics.jsonl holds them."""
    return [
        (r["step"], r[key])
        for r in records
        if r["type"] != "summary" and isinstance(r.get(key), int | float)
    ]


def assert_same(got, want, what=""):
    """Two lists of (step, value): the same steps, the same values (to float precision)."""
    assert [step for step, _ in got] == [step for step, _ in want], what
    assert [value for _, value in got] == pytest.approx([value for _, value in want]), what


# ---------------------------------------------------------------------------- W&B
def test_wandb_offline_run_holds_every_metric_the_config_and_the_summary(tmp_path, run):
    integrations = [{"type": "wandb", "wandb": {"project": "replay", "tags": ["t1", "t2"]}}]
    ctx = context(tmp_path, run)
    trackers = build_trackers(integrations, ctx, settings(tmp_path, wandb_mode="offline"))
    finished, warnings = feed(trackers, run["records"])
    assert warnings == [] and len(finished) == 1

    (run_dir,) = (ctx.artifact_dir / "wandb").glob("offline-run-*-ftjob-tracked")
    records = wandb_records(run_dir)
    (header,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (header.run_id, header.project, header.display_name) == (
        "ftjob-tracked",
        "replay",
        "tracked run",
    )
    assert list(header.tags) == ["t1", "t2"] and header.run_group == "sweep-1"
    config = {u.key: json.loads(u.value_json) for u in header.config.update}
    assert config["spec"]["learning_rate"] == run["spec"]["learning_rate"]
    assert config["plan"]["total_steps"] == 6 and config["job_id"] == "ftjob-tracked"
    assert "cache_dir" not in config["spec"]

    history: dict[str, list] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {
                "/".join(i.nested_key) or i.key: json.loads(i.value_json)
                for i in record.history.item
            }
            for key, value in row.items():
                history.setdefault(key, []).append((row["_step"], value))
    # one history row per step: a step's train and eval record (both hold `stage`) are one row
    for key in ("train_loss", "train_loss_target", "train_loss_generic", "lr", "stage"):
        assert dict(history[key]) == pytest.approx(dict(series(run["records"], key))), key
    assert_same(history["val_loss_target"], series(run["records"], "val_loss_target"))

    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for u in record.summary.update:
                summary["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
    final = run["records"][-1]
    assert summary["summary/final_val_loss_target"] == pytest.approx(final["final_val_loss_target"])
    (done,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert done.exit_code == 0


# ---------------------------------------------------------------------------- MLflow
def test_mlflow_run_holds_every_metric_and_the_config_and_a_resume_continues_it(tmp_path, run):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    integrations = [{"type": "mlflow", "mlflow": {"experiment": "replay-exp"}}]
    records = run["records"]
    # a first attempt logs through step 5 and is lost; the job resumes from its checkpoint at
    # step 3, so steps 4 and 5 come again (with the same values: training is deterministic)
    first, rest = [r for r in records if r["step"] <= 5], [r for r in records if r["step"] > 3]
    ctx = context(tmp_path, run)
    trackers = build_trackers(integrations, ctx, settings(tmp_path, mlflow_tracking_uri=uri))
    assert feed(trackers, first, outcome="lost")[1] == []

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("replay-exp")
    (paused,) = client.search_runs([experiment.experiment_id])
    assert paused.info.status == "KILLED" and paused.info.run_name == "tracked run"

    # resumed from the checkpoint at step 3: the same run goes on
    ctx = context(tmp_path, run, resume_step=3)
    trackers = build_trackers(integrations, ctx, settings(tmp_path, mlflow_tracking_uri=uri))
    assert feed(trackers, rest)[1] == []
    (done,) = client.search_runs([experiment.experiment_id])
    assert done.info.run_id == paused.info.run_id and done.info.status == "FINISHED"
    for key in ("train_loss", "train_loss_target", "train_loss_generic", "lr", "val_loss_generic"):
        history = client.get_metric_history(done.info.run_id, key)
        got = sorted((m.step, m.value) for m in history)
        assert_same(got, series(records, key), key)  # each step once
    assert done.data.metrics["summary/target_gain"] == pytest.approx(records[-1]["target_gain"])
    params = done.data.params
    assert float(params["spec.learning_rate"]) == run["spec"]["learning_rate"]
    assert params["plan.total_steps"] == "6" and params["job_id"] == "ftjob-tracked"
    assert done.data.tags["replayft.job_id"] == "ftjob-tracked"
    assert done.data.tags["replayft.sweep_id"] == "sweep-1"


# ---------------------------------------------------------------------------- TensorBoard
def test_tensorboard_event_files_hold_every_metric_and_pack_as_a_tarball(tmp_path, run):
    ctx = context(tmp_path, run)
    trackers = build_trackers([{"type": "tensorboard", "tensorboard": {}}], ctx, settings(tmp_path))
    (board,), warnings = feed(trackers, run["records"])
    assert warnings == [] and isinstance(board, TensorBoardTracker)

    found = scalars(board.log_dir)
    records = run["records"]
    for key in ("train_loss", "train_loss_target", "train_loss_generic", "lr", "val_loss_target"):
        assert_same(found[key], series(records, key), key)
    assert found["summary/generic_change"] == [(6, pytest.approx(records[-1]["generic_change"]))]

    packed = pack_tensorboard(board.log_dir, tmp_path / "tb.tar.gz")
    with tarfile.open(packed) as tar:
        names = tar.getnames()
    assert any(n.startswith("tensorboard/events.out.tfevents.") for n in names), names


def test_a_resumed_tensorboard_run_drops_what_a_killed_attempt_wrote_after_its_checkpoint(
    tmp_path, run
):
    records = [r for r in run["records"] if r["type"] == "train"]
    ctx = context(tmp_path, run)
    trackers = build_trackers([{"type": "tensorboard"}], ctx, settings(tmp_path))
    feed(trackers, records[:5], outcome="lost")  # killed after step 5; its checkpoint: step 3
    # the redone steps differ here only so that the test can tell which ones were kept
    redone = [{**r, "train_loss": r["train_loss"] + 100} for r in records[3:]]
    ctx = context(tmp_path, run, resume_step=3)
    feed(build_trackers([{"type": "tensorboard"}], ctx, settings(tmp_path)), redone)
    got = scalars(ctx.artifact_dir / "tensorboard")["train_loss"]
    assert [step for step, _ in got] == [1, 2, 3, 4, 5, 6]
    assert [value for _, value in got] == pytest.approx(
        [r["train_loss"] for r in records[:3]] + [r["train_loss"] for r in redone]
    )


# ---------------------------------------------------------------------------- faults
def test_an_unreachable_tracker_warns_without_secrets_and_the_others_log_everything(
    tmp_path, run, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-not-for-events")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://someone:hunter2-secret@127.0.0.1:{port}"
    integrations = [
        {"type": "mlflow", "mlflow": {}},
        {"type": "tensorboard", "tensorboard": {}},
    ]
    ctx = context(tmp_path, run)
    trackers = build_trackers(integrations, ctx, settings(tmp_path, mlflow_tracking_uri=uri))
    started = time.monotonic()
    for record in run["records"]:
        trackers.on_metrics(record)
    assert time.monotonic() - started < 1.0  # the hooks only queue
    finished = trackers.close("succeeded", 60)
    (warning,) = trackers.take_warnings()
    assert warning.startswith("MLflow could not start") and "goes on without it" in warning
    assert "hunter2-secret" not in warning and "tok-not-for-events" not in warning
    assert [type(t) for t in finished] == [TensorBoardTracker]
    board = scalars(ctx.artifact_dir / "tensorboard")
    assert_same(board["train_loss"], series(run["records"], "train_loss"))


def test_a_tracker_that_never_answers_does_not_hold_the_job_past_the_close_timeout(
    tmp_path, run, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    with socket.socket() as server:  # accepts connections (the backlog) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        integrations = [{"type": "mlflow", "mlflow": {"tracking_uri": uri}}]
        trackers = build_trackers(integrations, context(tmp_path, run), settings(tmp_path))
        started = time.monotonic()
        finished, warnings = feed(trackers, run["records"], timeout=1.0)
        assert time.monotonic() - started < 5
    assert finished == []
    assert warnings == ["MLflow did not finish sending within 1s; what it still held is lost."]


def test_numeric_items_flatten_the_summary_and_leave_out_what_is_not_a_number():
    record = {
        "type": "summary",
        "step": 6,
        "final_val_loss_target": 1.5,
        "evals": {"gsm8k": {"final_accuracy": 0.25, "kind": "generation"}},
        "loss_spike": None,
        "nan": float("nan"),
    }
    assert numeric_items(record) == {
        "final_val_loss_target": 1.5,
        "evals/gsm8k/final_accuracy": 0.25,
    }
