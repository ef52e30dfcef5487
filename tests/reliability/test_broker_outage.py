"""A broker outage loses nothing: work asked for while Redis is down is accepted, and work whose
messages vanished with a Redis restarted empty still runs.

Before the transactional outbox, a job created while Redis was down got a 500 with its row already
committed (stuck in `validating_files` for good), an upload stayed `uploaded`, and messages in a
Redis restarted empty were lost. And after reconnecting, a training worker reserved a second job
while still running its first (prefetch 1 counts nothing unacknowledged on the new connection).
"""

import json
import time

import pytest
from servicekit import (
    RUN_TOKEN,
    TERMINAL,
    RedisServer,
    Service,
    create_database,
    database_url,
    drop_database,
    end_survivors,
    service_env,
)

RUN_JOB = "replayft.run_job"
# marks this test's deployment, so that its teardown ends only what it started: the session's
# `service`, when this test process has started it, carries the bare RUN_TOKEN and lives on
TAG = f"{RUN_TOKEN}-broker-outage"


@pytest.fixture
def outage_service(tmp_path, cache_dir):
    """API + one training worker + one files worker on PostgreSQL and a Redis of our own, with
    short relay, redelivery and sweep intervals."""
    (tmp_path / "data").mkdir()
    (tmp_path / "tmp").mkdir()
    broker = RedisServer(tmp_path)
    broker.start()
    db_name = create_database()
    env = service_env(
        TAG,
        REPLAYFT_DATA_DIR=tmp_path / "data",
        REPLAYFT_DATABASE_URL=database_url(db_name),
        REPLAYFT_BROKER_URL=f"{broker.url}/0",
        REPLAYFT_CACHE_DIR=cache_dir,
        REPLAYFT_HEARTBEAT_TIMEOUT="5",
        REPLAYFT_RELAY_INTERVAL="0.3",
        REPLAYFT_REDELIVER_AFTER="3",
        REPLAYFT_SWEEP_INTERVAL="2",
        TMPDIR=tmp_path / "tmp",
    )
    svc = Service(tmp_path, env)
    try:
        assert svc.cli("db", "upgrade").returncode == 0
        svc.start_worker("training")
        svc.start_worker("files")
        svc.start_api()
        yield svc, broker
    finally:
        svc.stop()
        broker.kill()
        end_survivors(TAG)
        drop_database(db_name)


def reserved_run_jobs(broker: RedisServer) -> int:
    """run_job messages delivered to a worker and not yet acknowledged (kombu's `unacked` hash)."""
    entries = broker.client().hvals("unacked")
    return sum(json.loads(e)[0]["headers"]["task"] == RUN_JOB for e in entries)


@pytest.mark.slow
def test_jobs_and_uploads_survive_a_broker_restarted_empty(outage_service, target_jsonl, tmp_path):
    svc, broker = outage_service
    team = svc.team("broker-outage")
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(json.dumps({"prompt": "Question?", "completion": " Answer."}) + "\n")
    try:
        target = team.processed_file(target_jsonl, "fine-tune")["id"]
        long_job = team.create_job(team.tiny_job(target, n_epochs=20))["id"]
        team.wait_step(long_job, 2)
        # two jobs whose run_job messages wait in Redis behind the running one
        waiting = [team.create_job(team.tiny_job(target, n_epochs=0.25))["id"] for _ in range(2)]
        team.poll(
            lambda: [team.job(j)["status"] for j in waiting],
            lambda statuses: statuses == ["queued", "queued"],
            60,
            "the jobs to be queued",
        )
        broker.kill()
        during = [team.create_job(team.tiny_job(target, n_epochs=0.25))["id"]]
        upload = team.upload(tiny, "fine-tune")
        assert upload.status_code == 200, upload.text
        files = [upload.json()["id"]]
        time.sleep(2)
        broker.start()  # empty: the queued jobs' messages are gone

        for file_id in files:
            assert team.wait_file(file_id, timeout=60)["status"] == "processed"
        # the relay has sent the waiting jobs' tasks again; the busy training worker (one
        # process) must leave them in the queue for another worker rather than reserve one
        team.poll(
            lambda: broker.client().llen("training"),
            lambda n: n > 0,
            30,
            "run_job messages back in the training queue",
        )
        for _ in range(10):
            assert team.job(long_job)["status"] == "running"
            assert reserved_run_jobs(broker) == 0, "a busy training worker reserved a second job"
            time.sleep(0.5)

        team.ok(team.post(f"/v1/fine_tuning/jobs/{long_job}/cancel"))
        for job_id in waiting + during:
            job = team.wait_job(job_id, *TERMINAL, timeout=240)
            assert job["status"] == "succeeded", job
    finally:
        team.close()
