"""`replayft serve` with no database or broker settings: SQLite and an embedded broker in the data
directory, the API, the workers and the model-serving process, a first admin key written to a
private file."""

import stat
import time

import pytest
from servicekit import (
    RUN_TOKEN,
    Proc,
    Team,
    end_survivors,
    free_port,
    our_survivors,
    service_env,
    wait_ready,
)


@pytest.mark.slow
def test_serve_runs_a_job_with_no_external_services(tmp_path, cache_dir, target_jsonl):
    data_dir = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tag = f"{RUN_TOKEN}-serve"
    env = service_env(
        tag, REPLAYFT_DATA_DIR=data_dir, REPLAYFT_CACHE_DIR=cache_dir, TMPDIR=tmp_path
    )
    assert "REPLAYFT_DATABASE_URL" not in env and "REPLAYFT_BROKER_URL" not in env
    serve = Proc(
        "serve",
        ["cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "serve.log",
        cwd=tmp_path,
    )
    try:
        wait_ready(url, serve, 180, serve.tail)
        key_file = data_dir / "admin_key.txt"
        assert key_file.is_file(), sorted(p.name for p in data_dir.iterdir())
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, oct(key_file.stat().st_mode)
        admin = Team(url, key_file.read_text().strip(), "admin", lambda: serve.tail(80))
        try:
            target = admin.processed_file(target_jsonl, "fine-tune")
            job = admin.create_job(admin.tiny_job(target["id"], n_epochs=0.25))
            job = admin.wait_job(job["id"], "succeeded")
            progress = job["progress"]
            assert progress["step"] == progress["total_steps"] and job["fine_tuned_model"], job
            assert admin.checkpoints(job["id"]), "no checkpoint after a succeeded job"
            # serve started the model-serving process too: the fine-tuned model answers
            body = {"model": job["fine_tuned_model"], "max_tokens": 4}
            body["messages"] = [{"role": "user", "content": "2 + 3?"}]
            answer = admin.ok(admin.post("/v1/chat/completions", json=body))
            assert answer["usage"]["completion_tokens"] <= 4, answer
        finally:
            admin.close()
    finally:
        serve.stop()
    # stopping `serve` stops the worker it started
    deadline = time.monotonic() + 20
    while our_survivors(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = our_survivors(tag)
    end_survivors(tag)
    assert leftovers == [], f"processes left running after serve stopped: {leftovers}"
