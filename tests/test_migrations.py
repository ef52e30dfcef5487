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
