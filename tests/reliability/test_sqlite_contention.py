"""Nine jobs prepared at once on the embedded SQLite store while the database is locked.

During a 9-member sweep on `replayft serve`, three prepare_job tasks failed with
`sqlite3.OperationalError: database is locked`; their jobs then stayed `validating_files` (or
`queued` with no task behind them) and nothing reported it. A task that meets a transient database
error must retry, and the work it leaves undone must still be delivered (the outbox row stays due
until the job's row moves).

The scenario runs in a fresh interpreter (settings and engine are per process), against a SQLite
file, with the real task functions: a writer holds the database's write lock for longer than the
(short) busy timeout while the nine prepare_job tasks run in nine threads.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCENARIO = r"""
import json, sqlite3, sys, threading, time
from sqlalchemy import select
from control.db.migrate import upgrade
from control.db.models import File, Job, OutboxMessage
from control.db.session import session_scope
from api.schemas.jobs import JobCreate
from api.services import jobs
from control.queue import PREPARE_JOB, outbox
from api.services.teams import get_or_create_team
from control.settings import get_settings
from worker import delivery, tasks

settings = get_settings()
settings.ensure_dirs()
upgrade()
target = sys.argv[1]
with session_scope() as session:
    team = get_or_create_team(session=session, name="t")
    file = File(team_id=team.id, filename="t.jsonl", purpose="fine-tune", bytes=1, path=target,
                status="processed")
    session.add(file)
    session.commit()
    hp = {"n_epochs": 1, "batch_size": 4, "seq_len": 64, "eval_sequences": 4}
    body = {"model": "replayft/llama-tiny", "training_file": file.id, "seed": 7,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}}}
    ids = [jobs.create_job(session=session, team=team, body=JobCreate.model_validate(body),
                           settings=settings, queue=outbox)[0].id for _ in range(10)]
# warm the token cache, so that the nine tasks reach their database writes together
tasks.prepare_job.apply(args=[ids[0]])
ids = ids[1:]  # the nine

locker = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), timeout=30)
locker.execute("BEGIN IMMEDIATE")  # hold the write lock past the busy timeout
locker.execute("UPDATE teams SET name = name")
threads = [threading.Thread(target=tasks.prepare_job.apply, args=([j],)) for j in ids]
for t in threads:
    t.start()
time.sleep(3 * settings.sqlite_busy_timeout)
locker.commit()
for t in threads:
    t.join()

def states():
    with session_scope() as session:
        return {j: session.scalar(select(Job.status).where(Job.id == j)) for j in ids}

after_tasks = states()
# whatever the tasks left undone, the relay delivers: its send runs the task here
for _ in range(5):
    with session_scope() as session:
        session.execute(OutboxMessage.__table__.update().values(due_at=0))
        session.commit()
    delivery.relay_outbox(lambda task, *args: tasks.prepare_job.apply(args=args)
                          if task == PREPARE_JOB else None)
print(json.dumps({"after_tasks": after_tasks, "final": states()}))
"""


@pytest.mark.slow
def test_nine_prepare_jobs_survive_a_locked_sqlite_database(tmp_path, target_jsonl, cache_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYFT_")}
    env.update(
        REPLAYFT_DATA_DIR=str(tmp_path),
        REPLAYFT_CACHE_DIR=str(cache_dir),
        REPLAYFT_SQLITE_BUSY_TIMEOUT="0.5",
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
    )
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO, str(target_jsonl)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # the tasks retried through the lock by themselves ...
    assert set(result["after_tasks"].values()) == {"queued"}, result
    # ... and the relay, had they not, would have finished their work
    assert set(result["final"].values()) == {"queued"}, result
