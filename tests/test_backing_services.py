"""On a machine where no PostgreSQL or Redis runs and none is configured, the service tests start
throwaway servers of their own (servicekit.backing) and remove them when the test process exits.
CI has both servers running, so this is the only test of that path: a fresh interpreter whose
default addresses answer nothing."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from servicekit import free_port

TESTS = Path(__file__).resolve().parent

SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import psycopg, redis, servicekit

dead = int(sys.argv[2])  # a port nothing listens on: "no server here"
servicekit.PG_DEFAULT_ADMIN = f"host=127.0.0.1 port={dead} user=postgres dbname=postgres"
servicekit.REDIS_DEFAULT = f"127.0.0.1:{dead}"
with servicekit.own_database() as url, servicekit.own_redis_db() as broker:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
    redis.Redis.from_url(broker).set("k", "v")
    b = servicekit.backing()
    print(json.dumps({"pg_port": int(url.split(":")[-1].split("/")[0]), "redis_port": b.redis_port}))
"""


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_throwaway_postgres_and_redis_when_none_answers(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYFT_TEST_")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(TESTS), str(free_port())],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    ports = json.loads(done.stdout.strip().splitlines()[-1])
    assert ports["pg_port"] not in (5432, 0) and ports["redis_port"] != 6379, ports
    # gone with the process that started them
    assert not answers(ports["pg_port"]) and not answers(ports["redis_port"]), ports
