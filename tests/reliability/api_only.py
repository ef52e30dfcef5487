"""An API-only deployment for reliability tests that need settings of their own (a tiny pool, a
short stale-upload age) or a database they can stop: `replayft api` on its own PostgreSQL
database (the machine's server, or a throwaway one from `throwaway_postgres`) and its own Redis
database index, with no workers. Everything it starts is stopped and dropped on exit."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servicekit import Service, free_port, own_database, own_redis_db, service_env


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


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    assert found, f"{name} not found (PATH or /usr/lib/postgresql/*/bin)"
    return str(found if isinstance(found, str) else found[-1])


class ThrowawayPostgres:
    """A PostgreSQL server of our own on a free port (initdb + pg_ctl), so a test can stop and
    start it. PostgreSQL refuses to run as root: as root it runs as the `postgres` user."""

    def __init__(self):
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.dir = Path(tempfile.mkdtemp(prefix="replayft-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "--no-instructions",
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self.as_user, *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}\n{result.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()
