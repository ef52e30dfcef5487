"""The Alembic migrations build exactly the schema the ORM models describe, on SQLite and on
PostgreSQL: a model change without its migration (or the other way round) fails here."""

import json
import os
import subprocess
import sys
from pathlib import Path

from servicekit import own_database

REPO = Path(__file__).resolve().parents[1]

# run in a fresh interpreter: the settings and the engine are process-wide singletons
DIFF_SCRIPT = """
import json
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from control.db.base import Base
import control.db.models  # noqa: F401 - registers the tables
from control.db.migrate import upgrade
from control.settings import get_settings

upgrade()
with create_engine(get_settings().database_url).connect() as conn:
    diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
print(json.dumps([repr(d) for d in diff]))
"""


def schema_diff(tmp_path: Path, database_url: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYFT_")}
    env.update(REPLAYFT_DATA_DIR=str(tmp_path), REPLAYFT_DATABASE_URL=database_url)
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", DIFF_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sqlite_schema_matches_the_models(tmp_path):
    assert schema_diff(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}") == []


def test_postgresql_schema_matches_the_models(tmp_path):
    with own_database() as url:  # the session's PostgreSQL (servicekit: configured or our own)
        assert schema_diff(tmp_path, url) == []


# rows written at the revision before 0011 (32-bit counts), then the upgrade, then counts that
# need 64 bits; run in a fresh interpreter for the same reason as DIFF_SCRIPT
BIG_COUNTS_SCRIPT = """
import json
from sqlalchemy import select
from control.db.migrate import upgrade
from control.db.models import Checkpoint, File, Job, JobEvent, Team
from control.db.session import session_scope

upgrade("0010_job_integrations")
with session_scope() as s:
    team = Team(name="t")
    s.add(team)
    s.flush()
    file = File(team_id=team.id, filename="a.jsonl", purpose="fine-tune", bytes=10, path="/x")
    job = Job(team_id=team.id, model="m", training_file="f", spec={}, artifact_dir="/a",
              trained_tokens=5, status="succeeded")
    s.add_all([file, job])
    s.flush()
    s.add(Checkpoint(job_id=job.id, step_number=1, path="/c", fine_tuned_model_checkpoint="c"))
    s.add(JobEvent(job_id=job.id, message="hello"))
    ids = (file.id, job.id)
    s.commit()
upgrade()
with session_scope() as s:
    job, file = s.scalar(select(Job)), s.scalar(select(File))
    before = [job.trained_tokens, file.bytes]
    job.trained_tokens, file.bytes = 3 * 10**9, 5 * 2**30
    s.commit()
with session_scope() as s:
    job, file = s.scalar(select(Job)), s.scalar(select(File))
    kept = [s.scalar(select(Checkpoint.job_id)), s.scalar(select(JobEvent.message))]
    print(json.dumps({"ids": [file.id, job.id] == list(ids), "before": before, "kept": kept,
                      "job_id": job.id, "after": [job.trained_tokens, file.bytes]}))
"""


def big_counts(tmp_path: Path, database_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYFT_")}
    env.update(REPLAYFT_DATA_DIR=str(tmp_path), REPLAYFT_DATABASE_URL=database_url)
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", BIG_COUNTS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_big_counts(result: dict) -> None:
    assert result["ids"] and result["before"] == [5, 10]  # the upgrade kept the rows
    assert result["kept"] == [result["job_id"], "hello"]  # and what references them
    assert result["after"] == [3 * 10**9, 5 * 2**30]  # past 2^31: 32 bits would refuse


def test_counts_past_2_31_fit_after_upgrading_a_sqlite_database_with_rows(tmp_path):
    check_big_counts(big_counts(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}"))


def test_counts_past_2_31_fit_after_upgrading_a_postgresql_database_with_rows(tmp_path):
    with own_database() as url:
        check_big_counts(big_counts(tmp_path, url))
