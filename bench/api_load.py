"""API load: request latency and throughput of the HTTP service on PostgreSQL + Redis, and the
memory of a large streamed upload.

What it sets up (and tears down, also on failure, Ctrl-C or SIGTERM)
- A fresh PostgreSQL database (`replayft_bench_<pid>_<hex>`, dropped at the end) and an empty Redis
  database index, claimed with a marker key so that the service tests never take it at the same
  time (flushed at the end), in a temporary folder holding the data dir, logs and generated files.
- `replayft keys create` (which also migrates the database), then `replayft api` as a subprocess
  in its own process group, and a `replayft worker --queues files` only until the small target
  file uploaded once has been validated (status `processed`, which job creation requires). The
  worker is then stopped: nothing consumes the queues while we measure, so every created job stays
  in `validating_files` with its `prepare_job` message waiting in Redis, and the numbers are the
  API's alone.

What it measures (each phase after `--warmup` untimed requests of the same kind)
- `POST /v1/fine_tuning/jobs` (a llama-tiny job: the full request -> engine spec check, the job and
  event rows, the enqueue), `GET /v1/fine_tuning/jobs/{id}` on ids picked at random among those
  created, and `GET /v1/fine_tuning/jobs?limit=N` for each `--list-limits` N: `--requests` requests
  per phase from `--clients` concurrent asyncio clients (one httpx.AsyncClient, one connection
  per client). Latency is per request, client side; throughput = requests / phase wall time.
  Every non-2xx answer is counted, and 5xx answers are flagged as service errors.
- Uploads of generated text JSONL (`--small-upload-mb` then `--upload-mb`, MB = 10^6 bytes),
  each `--upload-repeats` times (median time shown; the stored file is deleted after each),
  streamed from disk by a sync httpx client in 64 KiB multipart chunks. A thread samples the API
  process's VmRSS every 10 ms from /proc/<pid>/status; before each upload VmHWM is reset through
  /proc/<pid>/clear_refs, so the reported peak is max(VmHWM, sampled max) over that upload alone.
  A streamed upload should leave that peak flat: no larger for the big file than the small one.
- The API process's CPU time (utime + stime) per phase, shown as cores busy; the client shares
  the machine, and the load average before and after is printed with the machine.

Sustained load (`--duration S`): instead of the fixed-count phases, one mixed phase in which every
client loops for S seconds over creates (10%), GET-by-id (60%) and lists of 20 (30%). A 503 with
Retry-After (the API shedding load when its database pool is saturated) is retried by the client
after the delay it names: it is counted as `shed`, separately, and the request's latency runs
from its first attempt to its final answer. Errors are every other non-2xx answer and every
transport failure (no HTTP answer: refused, reset, timed out).

`--database sqlite` runs the embedded default instead: no REPLAYFT_DATABASE_URL/BROKER_URL, so the
API uses SQLite and the SQLite-backed broker in its data dir, as `replayft serve` does.

Usage
    python bench/api_load.py                             # 16 clients x 1000 requests per phase
    python bench/api_load.py --clients 4 --requests 200 --upload-mb 50
    python bench/api_load.py --clients 200 --duration 60 --upload-mb 0 --small-upload-mb 0
    python bench/api_load.py --clients 200 --duration 60 --upload-mb 0 --small-upload-mb 0 \
        --database sqlite

Prints the machine, markdown tables, then one JSON line (the last line of stdout) with every
number; exits 1 when a request got a non-2xx answer, an upload failed, upload memory grew with
the file size, or the API log shows a 500 or a traceback. With `--database postgres` (the default) it needs
PostgreSQL (`--pg-admin-dsn`, trust auth) and Redis (`--redis-host/--redis-port`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from replay_engine.launcher import die_with_parent

REPO = Path(__file__).resolve().parents[1]
MB = 1_000_000
MIB = 1 << 20
REDIS_CLAIM_KEY = "replayft-bench:claimed-by"
CLAIM_TOKEN = f"api_load-{os.getpid()}-{secrets.token_hex(4)}"
TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    sys.stderr.write(f"[api_load {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------- machine
def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / (1 << 20), 1)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "mem_gib": mem_gib,
        "python": sys.version.split()[0],
        "httpx": httpx.__version__,
    }


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("+uncommitted" if dirty else "")
    except OSError:
        return "unknown"


# ---------------------------------------------------------------------------- /proc readings
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_hwm(pid: int) -> bool:
    """Reset the peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


class RssSampler:
    """Samples a process's VmRSS in a thread; `peak` is the largest value seen."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak = max(self.peak, proc_status(self.pid)["VmRSS"])
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------- processes


class Proc:
    """`python -m cli.main ARGS` in its own process group, output to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], root: Path):
        self.name = name
        self.log_path = root / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=root,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.pid = self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            text = []
        return f"--- {self.name} log, last {lines} lines ---\n" + "\n".join(text[-lines:])

    def _killpg(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, grace: float = 20) -> None:
        if self.alive:
            self._killpg(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        self._killpg(signal.SIGKILL)  # whatever is left in the group (pool children)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"replayft {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def wait_ready(url: str, proc: Proc, timeout: float) -> float:
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout:
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited before it was ready\n{proc.tail()}")
        try:
            resp = httpx.get(f"{url}/readyz", timeout=5)
            if resp.status_code == 200:
                return time.monotonic() - start
            last = f"{resp.status_code} {resp.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise RuntimeError(f"{url}/readyz not 200 after {timeout:.0f}s (last: {last})\n{proc.tail()}")


# ---------------------------------------------------------------------------- PostgreSQL, Redis
def create_database(admin_dsn: str) -> str:
    name = f"replayft_bench_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def claim_redis_db(host: str, port: int) -> int:
    """An empty Redis database index (15 down to 2), marked as ours."""
    for index in range(15, 1, -1):
        r = redis.Redis(host=host, port=port, db=index, socket_timeout=10)
        try:
            if r.dbsize() == 0 and r.set(REDIS_CLAIM_KEY, CLAIM_TOKEN, nx=True):
                return index
        finally:
            r.close()
    raise RuntimeError(f"no empty Redis database index among 2..15 at {host}:{port}")


def release_redis_db(host: str, port: int, index: int) -> int:
    """Flush the index we claimed (only if our marker is still there); -> keys removed."""
    r = redis.Redis(host=host, port=port, db=index, socket_timeout=10)
    try:
        if r.get(REDIS_CLAIM_KEY) != CLAIM_TOKEN.encode():
            log(f"redis db {index} no longer carries our claim marker; left as it is")
            return 0
        keys = r.dbsize()
        r.flushdb()
        return keys
    finally:
        r.close()


# ---------------------------------------------------------------------------- data
def write_target(path: Path, n: int = 200) -> Path:
    """Small prompt/completion JSONL: the training file every benchmarked job points at."""
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(n):
            a, b = rng.randint(1, 999), rng.randint(1, 999)
            row = {"prompt": f"Question: what is {a} plus {b}?\nAnswer:", "completion": f" {a + b}"}
            f.write(json.dumps(row) + "\n")
    return path


WORDS = (
    "the of and to in is was for on that with as by at from his her an which were are this be "
    "river model data season city music system history church school water energy language "
    "village album species century station science theory island government population"
).split()


def write_text_jsonl(path: Path, size_bytes: int, seed: int = 0) -> int:
    """`{"text": ...}` lines of random words, written until the file holds at least size_bytes."""
    rng = random.Random(seed)
    pool = [
        (json.dumps({"text": " ".join(rng.choices(WORDS, k=rng.randint(40, 400)))}) + "\n").encode()
        for _ in range(512)
    ]
    written = 0
    with open(path, "wb") as f:
        while written < size_bytes:
            block = b"".join(rng.choices(pool, k=256))
            f.write(block)
            written += len(block)
    return written


# ---------------------------------------------------------------------------- load phases
@dataclass
class Phase:
    name: str
    requests: int
    clients: int
    wall_s: float
    latencies_ms: list[float]
    statuses: Counter
    api_cpu_s: float
    client_cpu_s: float
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    shed: int = 0  # 503 + Retry-After answers, retried by the client

    def pct(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, max(0, round(q * (len(data) - 1))))]

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def summary(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "requests": self.requests,
            "clients": self.clients,
            "wall_s": round(self.wall_s, 3),
            "p50_ms": round(self.pct(0.50), 2),
            "p90_ms": round(self.pct(0.90), 2),
            "p99_ms": round(self.pct(0.99), 2),
            "max_ms": round(max(self.latencies_ms), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2),
            "req_per_s": round(self.requests / self.wall_s, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "api_cpu_cores": round(self.api_cpu_s / self.wall_s, 2),
            "client_cpu_cores": round(self.client_cpu_s / self.wall_s, 2),
            "errors": self.errors,
            "shed_retried": self.shed,
            "first_error": self.first_error,
            **self.extra,
        }


Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


MAX_RETRIES = 20


async def run_phase(
    name: str,
    client: httpx.AsyncClient,
    request: Request,
    n: int,
    clients: int,
    api_pid: int,
    duration: float = 0.0,
) -> tuple[Phase, list[httpx.Response]]:
    """`n` requests shared by `clients` concurrent clients, or, with `duration`, as many as they
    make in that many seconds."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    responses: list[httpx.Response] = []
    first_error: list[str] = []
    shed = 0
    if duration:
        end = time.perf_counter() + duration
        todo = iter(lambda: time.perf_counter() < end, False)  # until the time is up
        counter = iter(range(10**9))
    else:
        todo = counter = iter(range(n))  # shared by the clients: each takes the next number

    async def answer(i: int) -> httpx.Response:
        """The request's final answer: a 503 with Retry-After is retried after that delay."""
        nonlocal shed
        for _ in range(MAX_RETRIES):
            resp = await request(client, i)
            retry_after = resp.headers.get("retry-after")
            if resp.status_code != 503 or retry_after is None:
                return resp
            shed += 1
            await asyncio.sleep(float(retry_after))
        return resp

    async def one_client() -> None:
        for _ in todo:
            i = next(counter)
            t0 = time.perf_counter()
            try:
                resp = await answer(i)
            except httpx.HTTPError as exc:
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[0] += 1  # 0 = transport error (no HTTP answer)
                if not first_error:
                    first_error.append(f"transport: {exc!r}")
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses[resp.status_code] += 1
            responses.append(resp)
            if not 200 <= resp.status_code < 300 and not first_error:
                first_error.append(f"{resp.status_code} {resp.text[:500]}")

    cpu0, own0 = cpu_seconds(api_pid), time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    cpu, own = cpu_seconds(api_pid) - cpu0, time.process_time() - own0
    phase = Phase(
        name,
        len(latencies),
        clients,
        wall,
        latencies,
        statuses,
        cpu,
        own,
        first_error[0] if first_error else None,
        shed=shed,
    )
    return phase, responses


def job_body(training_file: str, i: int) -> dict[str, Any]:
    return {
        "model": "replayft/llama-tiny",
        "training_file": training_file,
        "seed": i,
        "suffix": f"bench-{i}",
        "metadata": {"bench": "api_load"},
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "seq_len": 64}},
        },
    }


async def load_phases(
    url: str, key: str, training_file: str, args: argparse.Namespace, api_pid: int
) -> tuple[list[Phase], int]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    headers = {"Authorization": f"Bearer {key}"}
    phases: list[Phase] = []
    rng = random.Random(0)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=120
    ) as client:

        async def create(c: httpx.AsyncClient, i: int) -> httpx.Response:
            return await c.post("/v1/fine_tuning/jobs", json=job_body(training_file, i))

        async def phase(name: str, request: Request) -> list[httpx.Response]:
            if args.warmup:
                await run_phase(name, client, request, args.warmup, args.clients, api_pid)
            log(f"{name}: {args.requests} requests, {args.clients} clients")
            result, responses = await run_phase(
                name, client, request, args.requests, args.clients, api_pid
            )
            phases.append(result)
            if result.server_errors:
                log(f"{name}: {result.server_errors} server errors; first: {result.first_error}")
            return responses

        if args.duration:
            return [await mixed_phase(client, create, args, api_pid)], 0

        created = await phase("POST /v1/fine_tuning/jobs (create)", create)
        job_ids = [r.json()["id"] for r in created if r.status_code == 200]
        if not job_ids:
            raise RuntimeError(f"no job was created: {phases[-1].first_error}")
        statuses = Counter(r.json()["status"] for r in created if r.status_code == 200)
        phases[-1].extra["created_status"] = dict(statuses)

        async def get(c: httpx.AsyncClient, _i: int) -> httpx.Response:
            return await c.get(f"/v1/fine_tuning/jobs/{rng.choice(job_ids)}")

        await phase("GET /v1/fine_tuning/jobs/{id}", get)

        n_jobs, params = 0, {"limit": 1000}
        while True:  # count the team's jobs (what the list phases page through)
            page = (await client.get("/v1/fine_tuning/jobs", params=params)).json()
            n_jobs += len(page["data"])
            if not page.get("has_more") or not page["data"]:
                break
            params["after"] = page["data"][-1]["id"]
        for limit in args.list_limits:

            async def listing(c: httpx.AsyncClient, _i: int, limit: int = limit) -> httpx.Response:
                return await c.get("/v1/fine_tuning/jobs", params={"limit": limit})

            responses = await phase(f"GET /v1/fine_tuning/jobs?limit={limit}", listing)
            ok = [r for r in responses if r.status_code == 200]
            if ok:
                phases[-1].extra["items_per_page"] = len(ok[0].json()["data"])
                phases[-1].extra["body_bytes"] = len(ok[0].content)
    return phases, n_jobs


async def mixed_phase(
    client: httpx.AsyncClient, create: Request, args: argparse.Namespace, api_pid: int
) -> Phase:
    """Every client loops for `--duration` s: 10% creates, 60% GET-by-id, 30% lists of 20."""
    seed_jobs = [await create(client, -i - 1) for i in range(8)]
    job_ids = [r.json()["id"] for r in seed_jobs if r.status_code == 200]
    if not job_ids:
        raise RuntimeError(f"no job was created: {seed_jobs[0].status_code} {seed_jobs[0].text}")
    rng = random.Random(0)

    async def mixed(c: httpx.AsyncClient, i: int) -> httpx.Response:
        pick = rng.random()
        if pick < 0.1:
            resp = await create(c, i)
            if resp.status_code == 200:
                job_ids.append(resp.json()["id"])
            return resp
        if pick < 0.7:
            return await c.get(f"/v1/fine_tuning/jobs/{rng.choice(job_ids)}")
        return await c.get("/v1/fine_tuning/jobs", params={"limit": 20})

    name = f"mixed for {args.duration:g} s (10% create, 60% get, 30% list of 20)"
    log(f"{name}: {args.clients} clients")
    phase, _ = await run_phase(
        name, client, mixed, 0, args.clients, api_pid, duration=args.duration
    )
    if phase.errors:
        log(f"{phase.errors} errors; first: {phase.first_error}")
    return phase


# ---------------------------------------------------------------------------- uploads
def upload_once(client: httpx.Client, path: Path, api_pid: int) -> dict[str, Any]:
    """One streamed upload; the stored file is deleted again so repeats do not fill the disk."""
    size = path.stat().st_size
    before = proc_status(api_pid)["VmRSS"]
    hwm_reset = reset_hwm(api_pid)
    cpu0, own0 = cpu_seconds(api_pid), time.process_time()
    with RssSampler(api_pid) as sampler, open(path, "rb") as f:
        t0 = time.perf_counter()
        resp = client.post(
            "/v1/files",
            files={"file": (path.name, f, "application/jsonl")},
            data={"purpose": "replay"},
        )
        elapsed = time.perf_counter() - t0
    cpu, own = cpu_seconds(api_pid) - cpu0, time.process_time() - own0
    status = proc_status(api_pid)
    peak = max(sampler.peak, status["VmHWM"] if hwm_reset else 0)
    result = {
        "status": resp.status_code,
        "seconds": elapsed,
        "rss_before": before,
        "rss_peak": peak,
        "rss_after": status["VmRSS"],
        "rss_samples": sampler.samples,
        "hwm_reset": hwm_reset,
        "api_cpu_s": cpu,
        "client_cpu_s": own,
    }
    if resp.status_code != 200:
        result["error"] = resp.text[:500]
    elif resp.json().get("bytes") != size:
        result["error"] = f"server recorded {resp.json().get('bytes')} bytes, sent {size}"
    else:
        deleted = client.delete(f"/v1/files/{resp.json()['id']}")
        if deleted.status_code != 200:
            result["error"] = f"DELETE -> {deleted.status_code} {deleted.text[:300]}"
    return result


def measure_upload(url: str, key: str, path: Path, api_pid: int, repeats: int) -> dict[str, Any]:
    """`repeats` uploads of one file: median time, RSS before the first and peak over all."""
    size = path.stat().st_size
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as c:
        runs = [upload_once(c, path, api_pid) for _ in range(repeats)]
    seconds = statistics.median(r["seconds"] for r in runs)
    peak = max(r["rss_peak"] for r in runs)
    before = runs[0]["rss_before"]
    busy = sum(r["seconds"] for r in runs)
    result: dict[str, Any] = {
        "file_bytes": size,
        "repeats": repeats,
        "statuses": [r["status"] for r in runs],
        "seconds_median": round(seconds, 3),
        "seconds_each": [round(r["seconds"], 3) for r in runs],
        "mb_per_s": round(size / MB / seconds, 1),
        "rss_before_mib": round(before / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_peak_growth_mib": round((peak - before) / MIB, 1),
        "rss_after_mib": round(runs[-1]["rss_after"] / MIB, 1),
        "rss_samples": sum(r["rss_samples"] for r in runs),
        "hwm_reset": all(r["hwm_reset"] for r in runs),
        "api_cpu_cores": round(sum(r["api_cpu_s"] for r in runs) / busy, 2),
        "client_cpu_cores": round(sum(r["client_cpu_s"] for r in runs) / busy, 2),
    }
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        result["error"] = errors[0]
    return result


# ---------------------------------------------------------------------------- report
def report(info: dict[str, Any]) -> str:
    m = info["machine"]
    lines = [
        f"Database: {info['args']['database']}",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['mem_gib']} GiB RAM; Python {m['python']}, httpx {m['httpx']}; "
        f"revision {info['revision']}",
        f"Load before: {info['uptime_before']}",
        f"Load after:  {info['uptime_after']}",
        f"Setup: API ready in {info['api_ready_s']:.1f} s; target file validated in "
        f"{info['validate_s']:.1f} s; {info['jobs_in_db']} jobs in the team when listing; "
        f"API RSS {info['api_rss_before_load_mib']} MiB before the request phases, "
        f"{info['api_rss_after_load_mib']} MiB after",
        "",
        "| endpoint | requests | clients | p50 ms | p90 ms | p99 ms | max ms | req/s "
        "| errors | shed (503, retried) | API CPU (cores) | client CPU (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in info["phases"]:
        lines.append(
            f"| `{p['phase']}` | {p['requests']} | {p['clients']} | {p['p50_ms']:.1f} "
            f"| {p['p90_ms']:.1f} | {p['p99_ms']:.1f} | {p['max_ms']:.1f} | {p['req_per_s']:.1f} "
            f"| {p['errors']} | {p['shed_retried']} "
            f"| {p['api_cpu_cores']:.2f} | {p['client_cpu_cores']:.2f} |"
        )
    if info["uploads"]:
        lines += [
            "",
            "| upload (`POST /v1/files`, streamed) | repeats | median s | MB/s "
            "| API RSS before MiB | API RSS peak MiB | peak - before MiB | API CPU (cores) "
            "| client CPU (cores) | statuses |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for u in info["uploads"]:
            lines.append(
                f"| {u['file_bytes'] / MB:.1f} MB ({u['file_bytes']} bytes) | {u['repeats']} "
                f"| {u['seconds_median']:.3f} | {u['mb_per_s']:.1f} | {u['rss_before_mib']:.1f} "
                f"| {u['rss_peak_mib']:.1f} | {u['rss_peak_growth_mib']:+.1f} "
                f"| {u['api_cpu_cores']:.2f} | {u['client_cpu_cores']:.2f} "
                f"| {', '.join(map(str, u['statuses']))} |"
            )
    problems = info["problems"]
    lines += ["", "Problems: " + ("; ".join(problems) if problems else "none")]
    return "\n".join(lines)


def find_problems(phases: list[dict[str, Any]], uploads: list[dict[str, Any]]) -> list[str]:
    problems = []
    for p in phases:
        bad = {k: v for k, v in p["statuses"].items() if not k.startswith("2")}
        if bad:
            problems.append(f"{p['phase']}: non-2xx {bad}, first: {p['first_error']}")
    for u in uploads:
        if "error" in u:
            problems.append(f"upload {u['file_bytes']} bytes: {u['statuses']} {u['error']}")
    if len(uploads) == 2 and uploads[1]["file_bytes"] > 2 * uploads[0]["file_bytes"]:
        small, big = uploads
        grew = big["rss_peak_growth_mib"] - small["rss_peak_growth_mib"]
        if grew > 0.25 * (big["file_bytes"] - small["file_bytes"]) / MIB:
            problems.append(
                f"upload memory grows with size: peak +{small['rss_peak_growth_mib']} MiB for "
                f"{small['file_bytes']} bytes, +{big['rss_peak_growth_mib']} MiB for "
                f"{big['file_bytes']} bytes"
            )
    return problems


# ---------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": machine(),
        "revision": git_revision(),
        "uptime_before": uptime(),
        "args": {k: v for k, v in vars(args).items() if k != "pg_admin_dsn"},
    }
    root = Path(tempfile.mkdtemp(prefix="replayft-api-load-"))
    db_name: str | None = None
    redis_db: int | None = None
    procs: list[Proc] = []
    try:
        upload_bytes = max(args.upload_mb, args.small_upload_mb) * MB
        free = shutil.disk_usage(root).free
        if free < 3 * upload_bytes + 512 * MIB:
            raise RuntimeError(f"{root}: {free / MB:.0f} MB free, need about {3 * upload_bytes}")
        if args.database == "postgres":
            db_name = create_database(args.pg_admin_dsn)
            redis_db = claim_redis_db(args.redis_host, args.redis_port)
        log(f"database {db_name or 'embedded SQLite'}, redis db {redis_db}, folder {root}")
        (root / "data").mkdir()
        (root / "tmp").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYFT_")}
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
            HF_HUB_OFFLINE="1",
            TQDM_DISABLE="1",
            TOKENIZERS_PARALLELISM="false",
            TMPDIR=str(root / "tmp"),
            REPLAYFT_DATA_DIR=str(root / "data"),
            REPLAYFT_MAX_UPLOAD_BYTES=str(2 * upload_bytes + MIB),
        )
        if db_name is not None:  # else the embedded default: SQLite database and broker
            env.update(
                REPLAYFT_DATABASE_URL=f"{args.pg_url_base}/{db_name}",
                REPLAYFT_BROKER_URL=f"redis://{args.redis_host}:{args.redis_port}/{redis_db}",
            )
        key = run_cli(env, root, "keys", "create", "--team", "bench").strip()  # also migrates

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = Proc("api", ["api", "--host", "127.0.0.1", "--port", str(port)], env, root)
        procs.append(api)
        worker = Proc(
            "files-worker", ["worker", "--queues", "files", "--loglevel", "INFO"], env, root
        )
        procs.append(worker)
        info["api_ready_s"] = wait_ready(url, api, timeout=180)
        log(f"API ready in {info['api_ready_s']:.1f} s (pid {api.pid})")

        target = write_target(root / "target.jsonl")
        t0 = time.monotonic()
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as c:
            with open(target, "rb") as f:
                resp = c.post(
                    "/v1/files",
                    files={"file": (target.name, f, "application/jsonl")},
                    data={"purpose": "fine-tune"},
                )
            resp.raise_for_status()
            file_id = resp.json()["id"]
            while True:
                file = c.get(f"/v1/files/{file_id}").json()
                if file["status"] == "processed":
                    break
                if file["status"] == "error" or time.monotonic() - t0 > 180:
                    raise RuntimeError(f"target file not processed: {file}\n{worker.tail()}")
                if not worker.alive:
                    raise RuntimeError(f"files worker exited\n{worker.tail()}")
                time.sleep(0.3)
        info["validate_s"] = time.monotonic() - t0
        worker.stop()
        log(f"target file {file_id} processed in {info['validate_s']:.1f} s; worker stopped")

        info["api_rss_before_load_mib"] = round(proc_status(api.pid)["VmRSS"] / MIB, 1)
        phases, info["jobs_in_db"] = asyncio.run(load_phases(url, key, file_id, args, api.pid))
        info["api_rss_after_load_mib"] = round(proc_status(api.pid)["VmRSS"] / MIB, 1)
        info["phases"] = [p.summary() for p in phases]

        info["uploads"] = []
        for mb in (args.small_upload_mb, args.upload_mb):
            if mb <= 0:
                continue
            path = root / f"text-{mb}mb.jsonl"
            write_text_jsonl(path, mb * MB, seed=mb)
            log(f"upload {path.stat().st_size} bytes")
            info["uploads"].append(measure_upload(url, key, path, api.pid, args.upload_repeats))
            path.unlink()
        if not api.alive:
            raise RuntimeError(f"the API exited during the run\n{api.tail()}")
        info["api_log_errors"] = sum(
            " 500 " in line or "Traceback" in line
            for line in api.log_path.read_text(errors="replace").splitlines()
        )
        info["problems"] = find_problems(info["phases"], info["uploads"])
        if info["api_log_errors"]:
            info["problems"].append(
                f"API log has {info['api_log_errors']} 500/Traceback lines:\n{api.tail(60)}"
            )
        info["uptime_after"] = uptime()
        return info
    finally:
        for proc in procs:
            proc.stop()
        if db_name is not None:
            try:
                drop_database(args.pg_admin_dsn, db_name)
            except psycopg.Error as exc:
                log(f"could not drop database {db_name}: {exc}")
        if redis_db is not None:
            try:
                removed = release_redis_db(args.redis_host, args.redis_port, redis_db)
                log(f"redis db {redis_db} flushed ({removed} keys)")
            except redis.RedisError as exc:
                log(f"could not flush redis db {redis_db}: {exc}")
        if args.keep_logs:
            Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
            for proc in procs:
                with contextlib.suppress(OSError):
                    shutil.copy(proc.log_path, Path(args.keep_logs) / proc.log_path.name)
        shutil.rmtree(root, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16, help="concurrent clients per phase")
    p.add_argument("--requests", type=int, default=1000, help="timed requests per phase")
    p.add_argument("--warmup", type=int, default=32, help="untimed requests before each phase")
    p.add_argument(
        "--duration",
        type=float,
        default=0,
        help="seconds of one mixed phase instead of the fixed-count phases (0: phases)",
    )
    p.add_argument(
        "--database",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="postgres + Redis, or the embedded default (SQLite database and broker)",
    )
    p.add_argument(
        "--list-limits",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[20, 100],
        help="page sizes of the list phases, comma-separated",
    )
    p.add_argument("--upload-mb", type=int, default=200, help="big upload, MB (0: skip)")
    p.add_argument("--small-upload-mb", type=int, default=20, help="comparison upload (0: skip)")
    p.add_argument("--upload-repeats", type=int, default=3, help="uploads of each file")
    p.add_argument(
        "--pg-admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )
    p.add_argument("--pg-url-base", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument("--keep-logs", default=None, help="copy the service logs to this folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so the `finally` cleanup runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    info = run(args)
    info["total_s"] = round(time.monotonic() - started, 1)
    print(report(info))
    print(f"\nTotal run time: {info['total_s']} s")
    print(json.dumps(info))
    return 1 if info["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
