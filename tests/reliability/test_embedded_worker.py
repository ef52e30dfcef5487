"""The default `replayft serve` (SQLite, embedded broker) under a stream of uploads while it trains.

Its worker used to hang for good in SQLite's mutex in a freshly forked pool child (state inherited
across fork), after anything from 4 to about 200 tasks, and one worker served both queues with two
slots, so two training jobs left uploads waiting behind them.
"""

import json
import random
import time

import pytest
from servicekit import RUN_TOKEN, Proc, Team, end_survivors, free_port, service_env, wait_ready

UPLOADS = 100


@pytest.mark.slow
def test_serve_validates_every_upload_while_it_trains(tmp_path, cache_dir, target_jsonl):
    data_dir = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tag = f"{RUN_TOKEN}-embedded-worker"
    env = service_env(
        tag, REPLAYFT_DATA_DIR=data_dir, REPLAYFT_CACHE_DIR=cache_dir, TMPDIR=tmp_path
    )
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}?", "completion": f" Answer {i}."}) + "\n"
            for i in range(3)
        )
    )
    serve = Proc(
        "serve",
        ["cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "serve.log",
        cwd=tmp_path,
    )
    admin = None
    try:
        wait_ready(url, serve, 180, serve.tail)
        admin = Team(url, (data_dir / "admin_key.txt").read_text().strip(), "admin", serve.tail)
        target = admin.processed_file(target_jsonl, "fine-tune")
        # two long jobs: as many as the old single worker had slots
        jobs = [admin.create_job(admin.tiny_job(target["id"], n_epochs=40)) for _ in range(2)]
        admin.poll(
            lambda: [admin.job(j["id"])["status"] for j in jobs],
            lambda statuses: "running" in statuses,
            120,
            "a training job to start",
        )
        first = admin.wait_file(admin.ok(admin.upload(tiny, "fine-tune"))["id"], timeout=30)
        assert first["status"] == "processed", first
        statuses = [admin.job(j["id"])["status"] for j in jobs]
        assert "running" in statuses, f"the upload was not validated during training: {statuses}"

        rng = random.Random(11)
        ids = []
        for _ in range(UPLOADS):
            ids.append(admin.ok(admin.upload(tiny, "fine-tune"))["id"])
            time.sleep(rng.uniform(0.1, 0.2))
        deadline = time.monotonic() + 45
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            pending = {
                i for i in pending if admin.ok(admin.get(f"/v1/files/{i}"))["status"] != "processed"
            }
            time.sleep(0.5)
        if pending:
            admin.fail(
                f"{len(pending)} of {UPLOADS} uploads never processed: {sorted(pending)[:5]}"
            )
    finally:
        if admin is not None:
            admin.close()  # cancels the jobs
        serve.stop()
        end_survivors(tag)
