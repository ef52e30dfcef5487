"""`replayft maintenance` runs the periodic checks without a worker: a job whose worker stopped
heartbeating is requeued, and the task that requeue recorded is relayed to the broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
import sys, time
from control.db.migrate import upgrade
from control.db.models import Job
from control.db.session import session_scope
from api.services.teams import get_or_create_team
upgrade()
with session_scope() as session:
    team = get_or_create_team(session=session, name="t")
    session.add(Job(id="ftjob-lost", team_id=team.id, status="running", model="m",
                    training_file="file-x", spec={}, artifact_dir="/nowhere",
                    lease_owner="gone:1:x", heartbeat_at=time.time() - 3600, attempts=1))
    session.commit()
"""

READ = """
from sqlalchemy import select
from control.db.models import Job, OutboxMessage
from control.db.session import session_scope
with session_scope() as session:
    job = session.scalar(select(Job).where(Job.id == "ftjob-lost"))
    sent = [m.sent_count for m in session.scalars(select(OutboxMessage))]
    print(job.status, job.lease_owner, sent)
"""


@pytest.mark.slow
def test_maintenance_requeues_a_lost_job_and_relays_its_task(tmp_path):
    env = {
        **os.environ,
        "REPLAYFT_DATA_DIR": str(tmp_path),
        "REPLAYFT_HEARTBEAT_TIMEOUT": "3",
        "REPLAYFT_RELAY_INTERVAL": "0.2",
    }
    for key in ("REPLAYFT_DATABASE_URL", "REPLAYFT_BROKER_URL"):  # embedded SQLite for both
        env.pop(key, None)
    subprocess.run([sys.executable, "-c", SETUP], env=env, cwd=ROOT, check=True)

    def read() -> str:
        out = subprocess.run(
            [sys.executable, "-c", READ], env=env, cwd=ROOT, check=True, capture_output=True
        )
        return out.stdout.decode().strip()

    assert read() == "running gone:1:x []"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "maintenance"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while (state := read()) != "queued None [1]" and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.5)
        assert state == "queued None [1]"  # requeued, and its run_job sent once (not yet taken)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
