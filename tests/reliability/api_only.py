"""An API-only deployment for reliability tests that need settings of their own (a tiny pool, a
short stale-upload age) or a database they can stop: `replayft api` on its own PostgreSQL
database (the session's server, or a throwaway one from servicekit's `throwaway_postgres`) and
its own Redis database index, with no workers. Everything it starts is stopped and dropped on
exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servicekit import Service, own_database, own_redis_db, service_env


@contextmanager
def api_deployment(root: Path, database_url: str | None = None, **settings) -> Iterator[Service]:
    """A started API (no workers) whose `REPLAYFT_*` settings include `settings`, on
    `database_url` or else a database of its own."""
    (root / "data").mkdir()
    (root / "tmp").mkdir()
    with contextlib.ExitStack() as stack:
        database_url = database_url or stack.enter_context(own_database())
        env = service_env(
            REPLAYFT_DATA_DIR=root / "data",
            REPLAYFT_DATABASE_URL=database_url,
            REPLAYFT_BROKER_URL=stack.enter_context(own_redis_db()),
            TMPDIR=root / "tmp",
            **settings,
        )
        svc = Service(root, env)
        try:
            svc.start_api()  # its start-up migrates the database
            yield svc
        finally:
            svc.stop()
