"""A job may name files that are still being validated, as the `openai` client's usual flow does
(`files.create`, then `fine_tuning.jobs.create` at once): the job waits in `validating_files`
until its files are validated, then proceeds; a file that fails validation fails the job with the
file's error.

To create jobs while their files are certainly still `uploaded`, the test stops the workers'
consumption of the `files` queue (Celery's remote control) and resumes it afterwards. To make the
job's preparation run while a file's validation has not finished, it holds a row lock on that
file, so the validation's final UPDATE waits until the test lets it go.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import openai
import psycopg
from celery import Celery
from servicekit import JOBS, TINY, Service, Team, assert_error

FILES_QUEUE = "files"


@contextmanager
def files_queue_paused(service: Service) -> Iterator[None]:
    """No worker takes `files` tasks inside the block (those sent meanwhile wait in Redis)."""
    consumers = [w for w in service.workers if w.alive and FILES_QUEUE in w.queues]
    # one of them waits on the locked file row below while another prepares the job
    assert len(consumers) >= 2, "this test needs two workers on the files queue"
    app = Celery(broker=service.env["REPLAYFT_BROKER_URL"])
    try:
        replies = app.control.cancel_consumer(FILES_QUEUE, reply=True, timeout=15)
        assert len(replies) == len(consumers), f"not every files worker stopped: {replies}"
        try:
            yield
        finally:
            replies = app.control.add_consumer(FILES_QUEUE, reply=True, timeout=15)
            assert len(replies) == len(consumers), f"not every files worker resumed: {replies}"
    finally:
        app.close()


@contextmanager
def file_row_locked(service: Service, file_id: str) -> Iterator[None]:
    """Hold a row lock on the file: its validation can read it, but not record its result."""
    dsn = service.env["REPLAYFT_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("SELECT id FROM files WHERE id = %s FOR UPDATE", (file_id,))
        try:
            yield
        finally:
            conn.rollback()


def hyperparameters() -> dict:
    hp = {"n_epochs": 0.25, "batch_size": 4, "seq_len": 64, "eval_sequences": 4}
    return {"type": "supervised", "supervised": {"hyperparameters": hp}}


def test_job_created_right_after_its_uploads_waits_for_them(
    service, team: Team, target_jsonl, replay_jsonl, tmp_path
):
    client = openai.OpenAI(
        base_url=f"{service.url}/v1", api_key=team.key, max_retries=0, timeout=60
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Q?", "completion": " A."}) + "\n{not json\n")
    with ExitStack() as target_locked:
        with files_queue_paused(service):
            with open(target_jsonl, "rb") as f:
                target = client.files.create(file=f, purpose="fine-tune")
            with open(replay_jsonl, "rb") as f:
                replay = client.files.create(file=f, purpose="replay")
            with open(bad, "rb") as f:
                broken = client.files.create(file=f, purpose="fine-tune")
            waiting = client.fine_tuning.jobs.create(
                model=TINY,
                training_file=target.id,
                seed=3,
                method=hyperparameters(),
                extra_body={
                    "replay": {
                        "dataset": replay.id,
                        "fraction": 0.25,
                        "validation_dataset": target.id,  # any fine-tune file
                    }
                },
            )
            failing = client.fine_tuning.jobs.create(
                model=TINY, training_file=broken.id, method=hyperparameters()
            )
            team.job_ids += [waiting.id, failing.id]  # cancelled at teardown if still running
            assert waiting.status == failing.status == "validating_files"
            for file in (target, replay, broken):
                assert client.files.retrieve(file.id).status == "uploaded"
            target_locked.enter_context(file_row_locked(service, target.id))
        # the queue runs again, but the target's validation cannot record its result: the
        # job's preparation finds the file unfinished and leaves the job waiting
        team.poll(
            lambda: [e["message"] for e in team.events(waiting.id)],
            lambda messages: any(target.id in m and "Waiting for" in m for m in messages),
            90,
            f"{waiting.id} to wait for {target.id}",
        )
        assert team.job(waiting.id)["status"] == "validating_files"
        assert client.files.retrieve(target.id).status == "uploaded"

    # validated now: the job goes on by itself
    job = team.poll(
        lambda: team.job(waiting.id),
        lambda j: j["status"] != "validating_files",
        90,
        f"{waiting.id} to leave validating_files",
    )
    assert job["status"] in ("queued", "running", "succeeded"), job
    assert job["progress"]["total_steps"] > 0, job
    assert job["replay"]["validation_dataset"] == target.id, job["replay"]
    assert any("steps planned" in e["message"] for e in team.events(waiting.id))
    assert client.files.retrieve(target.id).status == "processed"
    team.ok(team.post(f"/v1/fine_tuning/jobs/{waiting.id}/cancel"))

    # the broken file fails its job with the file's own error, naming the field
    failed = team.poll(
        lambda: team.job(failing.id),
        lambda j: j["status"] != "validating_files",
        90,
        f"{failing.id} to fail",
    )
    details = client.files.retrieve(broken.id)
    assert details.status == "error" and "line 2" in details.status_details
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "invalid_file", failed["error"]
    assert failed["error"]["param"] == "training_file", failed["error"]
    assert broken.id in failed["error"]["message"], failed["error"]
    assert details.status_details in failed["error"]["message"], failed["error"]


def test_generic_validation_file_is_checked_like_the_others(team: Team, target_jsonl, replay_jsonl):
    target = team.processed_file(target_jsonl, "fine-tune")["id"]
    replay = team.processed_file(replay_jsonl, "replay")["id"]
    cases = [  # (replay.validation_dataset, the error code)
        ("file-nonexistent", "file_not_found"),
        (replay, "invalid_file_purpose"),  # a validation file is a fine-tune file
    ]
    for validation, code in cases:
        body = team.tiny_job(target, replay)
        body["replay"]["validation_dataset"] = validation
        err = assert_error(team.post(JOBS, json=body), 400, "replay.validation_dataset")
        assert err["code"] == code, err
