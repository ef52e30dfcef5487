"""Jobs end to end on PostgreSQL + Redis with a real Celery worker: a tiny replay job from upload
to a downloadable checkpoint, cancel, pause/resume against an uninterrupted twin, and listing."""

import io
import json
import re
import tarfile
from pathlib import Path

import pytest
import torch
from servicekit import (
    JOBS,
    TARGET_EXAMPLES,
    TERMINAL,
    TINY,
    Team,
    assert_error,
    assert_same_training,
    train_records,
    with_distributed,
)
from transformers import AutoModelForCausalLM

from worker.runner import DBHooks


def first_index(messages: list[str], pattern: str) -> int | None:
    return next((i for i, m in enumerate(messages) if re.search(pattern, m, re.I)), None)


def last_index(messages: list[str], pattern: str) -> int | None:
    hits = [i for i, m in enumerate(messages) if re.search(pattern, m, re.I)]
    return hits[-1] if hits else None


def test_replay_job_from_upload_to_downloadable_checkpoint(
    team: Team, other_team: Team, target_jsonl, replay_jsonl, tmp_path
):
    uploaded = team.ok(team.upload(target_jsonl, "fine-tune"))
    assert uploaded["object"] == "file" and uploaded["id"].startswith("file-"), uploaded
    assert uploaded["purpose"] == "fine-tune" and uploaded["filename"] == target_jsonl.name
    assert uploaded["bytes"] == target_jsonl.stat().st_size and uploaded["created_at"] > 0
    target = team.wait_file(uploaded["id"])
    assert target["status"] == "processed", target
    assert target["stats"]["format"] and target["stats"]["examples"] == TARGET_EXAMPLES, target
    assert target["stats"]["tokens"] > 0, target
    replay = team.processed_file(replay_jsonl, "replay")
    assert replay["purpose"] == "replay" and replay["stats"]["examples"] == 20, replay
    content = team.get(f"/v1/files/{target['id']}/content")
    assert content.status_code == 200 and content.content == target_jsonl.read_bytes()
    assert {target["id"], replay["id"]} <= set(team.file_ids())

    body = team.tiny_job(
        target["id"], replay["id"], n_epochs=0.6, suffix="happy", metadata={"case": "happy"}
    )
    job = team.create_job(body)
    assert job["model"] == TINY and job["training_file"] == target["id"]
    assert job["replay"]["dataset"] in (replay["id"], [replay["id"]]), job["replay"]
    assert job["replay"]["fraction"] == 0.25, job["replay"]
    assert job["metadata"] == {"case": "happy"} and job["status"] != "failed", job

    job = team.wait_job(job["id"], "succeeded")
    progress = job["progress"]
    assert progress["total_steps"] and progress["step"] == progress["total_steps"], progress
    total = progress["total_steps"]
    assert job["trained_tokens"] and job["trained_tokens"] > 0, job
    assert job["error"] is None and job["finished_at"] >= job["created_at"], job
    assert job["fine_tuned_model"].startswith(f"ft:{TINY}:"), job["fine_tuned_model"]
    assert "happy" in job["fine_tuned_model"], job["fine_tuned_model"]

    events = team.events(job["id"])
    assert all(e["object"] == "fine_tuning.job.event" for e in events), events
    assert all(e["level"] in ("info", "warn", "error") for e in events), events
    messages = [e["message"] for e in events]
    started, finished = (
        first_index(messages, r"start"),
        last_index(messages, r"finish|succe|complet"),
    )
    assert started is not None and finished is not None and started < finished, messages

    records = team.metrics(job["id"])
    steps = train_records(records)
    assert sorted(steps) == list(range(1, total + 1)), sorted(steps)

    # the job's summary (a ReplayFT extra) is the engine's own: last eval, spike on the target loss
    summary = job["summary"]
    evals = [r for r in records if r.get("val_loss_target") is not None]
    assert summary["final_val_loss_target"] == evals[-1]["val_loss_target"], (summary, evals[-1])
    spike = summary["loss_spike"]
    assert spike["initial_loss"] == steps[1]["train_loss_target"], (spike, steps[1])
    assert spike["peak_loss"] == max(steps[s]["train_loss_target"] for s in steps), spike
    listed = team.ok(team.get(JOBS, params={"status": "succeeded"}))["data"]
    assert [j["summary"] for j in listed if j["id"] == job["id"]] == [summary], listed
    assert all(r.get("lr") is not None and r["lr"] > 0 for r in steps.values()), records[:3]
    assert all(r.get("train_loss_target") is not None for r in steps.values()), records[:3]
    assert any(r.get("train_loss_generic") is not None for r in steps.values()), records[:3]
    assert any(r.get("val_loss_target") is not None for r in records), records[-3:]

    ckpts = team.checkpoints(job["id"])
    assert ckpts, "no checkpoints listed"
    for c in ckpts:
        assert c["object"] == "fine_tuning.job.checkpoint" and c["id"].startswith("ftckpt-"), c
        assert c["fine_tuning_job_id"] == job["id"] and c["fine_tuned_model_checkpoint"], c
    final = ckpts[-1]
    assert final["step_number"] == total and final["metrics"], final
    assert final["metrics"].get("step") == total, final

    download = team.get(f"{JOBS}/{job['id']}/checkpoints/{final['id']}/download")
    assert download.status_code == 200, download.text[:500]
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:gz") as tar:
        tar.extractall(tmp_path / "ckpt", filter="data")
    configs = list((tmp_path / "ckpt").rglob("config.json"))
    assert len(configs) == 1, configs
    model = AutoModelForCausalLM.from_pretrained(configs[0].parent)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape[:2] == (1, 4) and torch.isfinite(logits).all()

    model_ids = [m["id"] for m in team.ok(team.get("/v1/models"))["data"]]
    assert TINY in model_ids and job["fine_tuned_model"] in model_ids, model_ids

    # another team sees none of it
    other_models = [m["id"] for m in other_team.ok(other_team.get("/v1/models"))["data"]]
    assert TINY in other_models and job["fine_tuned_model"] not in other_models
    assert_error(other_team.get(f"{JOBS}/{job['id']}"), 404)
    assert_error(other_team.get(f"{JOBS}/{job['id']}/checkpoints/{final['id']}/download"), 404)

    # downsampling: at most N points per series (train, eval), and neither series vanishes
    few = team.metrics(job["id"], max_points=5)
    few_evals = [r for r in few if r.get("val_loss_target") is not None]
    assert 0 < len(few) <= 10 and len(few_evals) <= 5, few
    assert 0 < len(train_records(few)) <= 5, f"max_points=5 lost the train_loss series: {few}"


def test_cancel_stops_a_running_job_within_a_few_steps(team: Team, team_files):
    job = team.create_job(team.tiny_job(*team_files, n_epochs=12))  # ~390 steps
    team.wait_step(job["id"], 2)

    # the live stream delivers while the job runs
    received = []
    with team.http.stream("GET", f"{JOBS}/{job['id']}/stream", timeout=60) as stream:
        assert stream.status_code == 200, stream.read()[:500]
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data:"):
                received.append(line[5:].strip())
            if len(received) >= 3:
                break
    assert any(_is_json(d) for d in received), received

    cancelled = team.ok(team.post(f"{JOBS}/{job['id']}/cancel"))
    assert cancelled["id"] == job["id"] and cancelled["object"] == "fine_tuning.job", cancelled
    step_at_cancel = team.job(job["id"])["progress"]["step"]
    job = team.wait_job(job["id"], "cancelled", timeout=120)
    assert job["fine_tuned_model"] is None, job
    # The status may flip before the worker notices; training must then stop within a few steps.
    # `progress` lags the worker by up to one flush and the worker polls for control at its own
    # interval, so "a few" is what fits in that time at this machine's speed (a fast idle machine
    # runs dozens of tiny steps a second), out of the ~390 the job would otherwise run.
    final = team.settled_step(job["id"])
    records = train_records(team.metrics(job["id"]))
    last_step = max(records, default=0)
    step_time = sorted(r["step_time"] for r in records.values())[len(records) // 2]
    lag_s = DBHooks.FLUSH_SECONDS + DBHooks.CONTROL_POLL_SECONDS + 1.0
    allowed = step_at_cancel + 5 + int(lag_s / step_time)
    assert final <= allowed and last_step <= allowed, (step_at_cancel, final, last_step, step_time)
    assert last_step < job["progress"]["total_steps"] // 2, (last_step, job["progress"])
    assert team.job(job["id"])["status"] == "cancelled"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_pause_then_resume_matches_an_uninterrupted_run(team: Team, team_files):
    body = team.tiny_job(*team_files, n_epochs=0.6, seed=11)  # ~20 steps
    job = team.create_job(body)
    total = team.wait_step(job["id"], 3)["progress"]["total_steps"]
    paused = team.ok(team.post(f"{JOBS}/{job['id']}/pause"))
    assert paused["id"] == job["id"], paused
    job = team.wait_job(job["id"], "paused", timeout=120)
    step = team.settled_step(job["id"])
    assert 0 < step < total, (job["progress"], step)
    ckpts = team.checkpoints(job["id"])
    assert ckpts and ckpts[-1]["step_number"] == step, (step, ckpts)

    resumed = team.ok(team.post(f"{JOBS}/{job['id']}/resume"))
    assert resumed["id"] == job["id"] and resumed["status"] not in TERMINAL, resumed
    twin = team.create_job(body)  # same body and seed, never interrupted
    job = team.wait_job(job["id"], "succeeded")
    twin = team.wait_job(twin["id"], "succeeded")
    messages = [e["message"] for e in team.events(job["id"])]
    assert first_index(messages, r"paus") is not None, messages
    assert first_index(messages, r"resum") is not None, messages

    got, want = team.metrics(job["id"]), team.metrics(twin["id"])
    got_steps, want_steps = train_records(got), train_records(want)
    assert sorted(got_steps) == sorted(want_steps) == list(range(1, total + 1)), sorted(got_steps)
    for s in want_steps:
        for name in ("train_loss", "train_loss_target", "train_loss_generic", "lr"):
            assert got_steps[s][name] == pytest.approx(want_steps[s][name], rel=1e-4, abs=1e-6), (
                s,
                name,
            )
    evals = [r for r in want if r.get("val_loss_target") is not None and r["step"] == total]
    got_evals = [r for r in got if r.get("val_loss_target") is not None and r["step"] == total]
    assert evals and got_evals, (got[-3:], want[-3:])
    assert got_evals[-1]["val_loss_target"] == pytest.approx(evals[-1]["val_loss_target"], rel=1e-4)
    assert job["trained_tokens"] == twin["trained_tokens"], (job, twin)


def test_list_pagination_metadata_filter_and_idempotency(team: Team, team_files):
    target, _ = team_files
    body = team.tiny_job(target, n_epochs=0.1)  # ~3 steps
    created = []
    for i, group in enumerate(["a", "a", "b"]):
        created.append(team.create_job({**body, "metadata": {"group": group, "i": str(i)}})["id"])
    once = team.create_job(body, headers={"Idempotency-Key": "k-123"})
    again = team.create_job(body, headers={"Idempotency-Key": "k-123"})
    assert again["id"] == once["id"], (once, again)
    created.append(once["id"])

    page = team.ok(team.get(JOBS, params={"limit": 2}))
    assert page["object"] == "list" and len(page["data"]) == 2 and page["has_more"] is True, page
    listed = team.list_all(JOBS, limit=2)
    assert [j["id"] for j in listed] == created[::-1], "newest first, each job once"
    group_a = team.ok(team.get(JOBS, params={"metadata[group]": "a"}))["data"]
    assert sorted(j["id"] for j in group_a) == sorted(created[:2]), group_a

    # cancelling a job that has not finished yet works whether it is queued or running
    for job_id in created:
        resp = team.post(f"{JOBS}/{job_id}/cancel")
        if resp.status_code != 200:  # it may already have succeeded: a 4xx error, not a crash
            assert_error(resp, (400, 409))
    for job_id in created:
        assert team.wait_job(job_id, *TERMINAL)["status"] in ("cancelled", "succeeded")


def test_two_process_job_pauses_resumes_and_matches_one_process(team: Team, team_files):
    """A job on 2 processes (torchrun, gloo on CPU) behind a real worker: rank 0's metrics and
    checkpoints reach the database, pause stops both ranks, and the resumed job's losses equal
    a one-process twin's."""
    body = team.tiny_job(*team_files, n_epochs=0.6, seed=13)  # ~20 steps
    two = with_distributed(body, strategy="ddp", gpus_per_node=2)
    job = team.create_job(two)
    total = team.pause_mid_run(job["id"])
    team.ok(team.post(f"{JOBS}/{job['id']}/resume"))
    twin = team.create_job(body)  # one process, never interrupted
    job = team.wait_job(job["id"], "succeeded")
    twin = team.wait_job(twin["id"], "succeeded")
    assert_same_training(team.metrics(job["id"]), team.metrics(twin["id"]), total)
    assert [c["step_number"] for c in team.checkpoints(job["id"])][-1] == total
    messages = [e["message"] for e in team.events(job["id"])]
    assert messages.count("Training on 2 processes (ddp).") == 2, messages  # both attempts


def test_a_files_worker_keeps_its_child_across_uploads(service, team: Team, target_jsonl):
    """Training gets a fresh child process per job (its memory is released when it ends), but a
    files-only worker's child serves upload after upload: a fresh one per task would pay the
    imports and the tokenizer load on every file."""

    def children(worker) -> set[int]:
        """The worker's pool children (not its maintenance process, started by
        multiprocessing's spawn, nor that module's resource tracker)."""
        pid = worker.popen.pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids = {int(p) for p in f.read().split()}
        return {
            p for p in pids if b"multiprocessing" not in Path(f"/proc/{p}/cmdline").read_bytes()
        }

    (files_worker,) = [w for w in service.workers if w.alive and w.queues == ["files"]]
    seen = []
    for _ in range(3):
        team.processed_file(target_jsonl, "fine-tune")
        seen.append(children(files_worker))
    assert len(seen[0]) == 1 and seen[0] == seen[1] == seen[2], seen
