"""The Alembic migrations build exactly the schema the ORM models describe, on SQLite and on
PostgreSQL: a model change without its migration (or the other way round) fails here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

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
    name = f"replayft_migrations_{os.getpid()}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:  # CI starts PostgreSQL; say so if it is not there
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required: {exc}")
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            assert schema_diff(tmp_path, url) == []
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
