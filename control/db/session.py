"""Engine and session factory, one per process, built from the settings on first use.

SQLite is shared by the API, the worker and their threads, so it runs in WAL mode with a long
busy timeout: readers never block the writer, and writers wait their turn instead of failing.

Both databases get a pool sized by `REPLAYFT_DB_POOL_SIZE` + `REPLAYFT_DB_MAX_OVERFLOW`, and a
checkout waits at most `REPLAYFT_DB_POOL_TIMEOUT` seconds (then sqlalchemy's TimeoutError, which
the API answers with 503 and Retry-After). The API also admits at most that many requests to the
database at once (`api.deps.get_db`), so under load requests queue without holding a connection
or a thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from control.settings import get_settings


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        busy = settings.sqlite_busy_timeout
        engine = create_engine(
            settings.database_url, connect_args={"timeout": busy}, **_pool_options(settings)
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # pre-ping: connections that died with a database restart are replaced, not handed out
    return create_engine(settings.database_url, pool_pre_ping=True, **_pool_options(settings))


def _pool_options(settings) -> dict:
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
    }


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session for code outside a request (worker, CLI, background threads)."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()
