"""Helpers for the service tests: subprocesses with log files, a team's HTTP client with polling
waits, and the PostgreSQL/Redis isolation of a test session. Fixtures live in conftest.py."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

REPO = Path(__file__).resolve().parents[1]
TINY = "replayft/llama-tiny"
TERMINAL = ("succeeded", "failed", "cancelled")
JOBS = "/v1/fine_tuning/jobs"


MAX_UPLOAD_BYTES = 256 * 1024  # the session server's limit; every legitimate upload is far below
HEARTBEAT_TIMEOUT_S = 5
RENDEZVOUS_TIMEOUT_S = 90  # a multi-machine job waits this long for its other workers
FILE_TIMEOUT_S = 90  # upload -> processed
JOB_TIMEOUT_S = 300  # a tiny job, on a busy 2-core machine
TARGET_EXAMPLES = 30
REPLAY_DOCS = 20

# Every process the tests start carries this in its environment, so teardown can find (and end)
# any descendant that outlived its process group, e.g. a worker that `replayft serve` detached.
RUN_TOKEN = f"{os.getpid()}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(tag: str = RUN_TOKEN, **settings: str | Path) -> dict[str, str]:
    """The environment of a service process: ours minus any REPLAYFT_* setting, plus `settings`.

    `tag` marks the process (and whatever it starts) for `our_survivors`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYFT_")}
    env.update(
        HF_HUB_OFFLINE="1",
        TQDM_DISABLE="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        REPLAYFT_TEST_RUN=tag,
    )
    # the checkout's code, whether or not it is installed in editable mode
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update({k: str(v) for k, v in settings.items()})
    return env


SUCCESS_ACCESS_LINE = re.compile(r'HTTP/1\.1" [23]\d\d ')


class Proc:
    """`python -m ARGS` in a new process group, stdout and stderr to `log_path`."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path, cwd: Path):
        self.name, self.log_path = name, log_path
        self.queues: list[str] = []
        self._terminated = False
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, needle: str, timeout: float, diagnostics: Callable[[], str]) -> None:
        """Until `needle` shows in the log (a worker's " ready." line, say)."""
        deadline = time.monotonic() + timeout
        while needle not in self.log_text():
            if not self.alive:
                raise AssertionError(f"{self.name} exited before {needle!r}\n{diagnostics()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {needle!r} from {self.name} in {timeout}s\n{diagnostics()}"
                )
            time.sleep(0.2)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        status = "running" if self.alive else f"exited {self.popen.returncode}"
        # uvicorn's access lines for successful polls would crowd out everything else
        kept = [line for line in text.splitlines() if not SUCCESS_ACCESS_LINE.search(line)]
        body = "\n".join(kept[-lines:])
        return f"----- {self.name} ({status}), last {lines} lines of {self.log_path} -----\n{body}"

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        """SIGKILL the whole group: the process and its pool children die at once, like a lost machine."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def terminate(self) -> None:
        """SIGTERM the group (a graceful stop) without waiting for it."""
        if self.alive and not self._terminated:
            self._signal_group(signal.SIGTERM)
            self._terminated = True

    def stop(self, grace: float = 20) -> None:
        if self.alive:
            self.terminate()
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # stragglers left in the group
        try:
            self.popen.wait(timeout=30)
        finally:
            self._log.close()


def our_survivors(tag: str = RUN_TOKEN) -> list[int]:
    """Pids of live processes whose environment carries `tag` (so these tests started them)."""
    found = []
    needle = f"REPLAYFT_TEST_RUN={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def end_survivors(tag: str = RUN_TOKEN) -> None:
    for pid in our_survivors(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cli(env: dict[str, str], cwd: Path, *args: str, timeout: float = 180):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# ---------------------------------------------------------------------------- HTTP helpers
def error_of(resp: httpx.Response) -> dict[str, Any]:
    """The `error` object of an error response, after checking the documented shape."""
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(
            f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}, body is not JSON: {resp.text[:500]}"
        ) from None
    err = body.get("error") if isinstance(body, dict) else None
    assert isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err), (
        f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}: error body shape is {body}"
    )
    assert isinstance(err["message"], str) and err["message"], body
    return err


def assert_error(resp: httpx.Response, status: int | Iterable[int], param: str | None = None):
    statuses = {status} if isinstance(status, int) else set(status)
    assert resp.status_code in statuses, (
        f"{resp.request.method} {resp.request.url.path}: expected {sorted(statuses)}, got "
        f"{resp.status_code} {resp.text[:1000]}"
    )
    err = error_of(resp)
    if param is not None:
        assert err["param"] == param, (
            f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}: param should be "
            f"{param!r}: {resp.text[:1000]}"
        )
    return err


def train_records(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Metric records that describe an optimizer step (they carry train_loss), by step."""
    return {r["step"]: r for r in records if r.get("train_loss") is not None}


def with_distributed(body: dict[str, Any], **distributed: Any) -> dict[str, Any]:
    """`body` (a tiny_job) training on several processes: hyperparameters.distributed set."""
    hp = body["method"]["supervised"]["hyperparameters"]
    return {
        **body,
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {**hp, "distributed": distributed}},
        },
    }


def assert_same_training(got: list[dict[str, Any]], want: list[dict[str, Any]], total: int) -> None:
    """Two jobs' metrics describe the same run: every step once, the same losses."""
    got_steps, want_steps = train_records(got), train_records(want)
    assert sorted(got_steps) == sorted(want_steps) == list(range(1, total + 1)), sorted(got_steps)
    for s in want_steps:
        for name in ("train_loss", "train_loss_target", "train_loss_generic"):
            assert got_steps[s][name] == pytest.approx(want_steps[s][name], rel=1e-4), (s, name)


class Team:
    """One team's view of a server: an authenticated HTTP client plus polling helpers."""

    def __init__(self, url: str, key: str, name: str, diagnostics: Callable[[], str]):
        self.url, self.key, self.name = url, key, name
        self.diagnostics = diagnostics
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        self.job_ids: list[str] = []

    # --- plain requests
    def get(self, path: str, **kw) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.http.post(path, **kw)

    def delete(self, path: str, **kw) -> httpx.Response:
        return self.http.delete(path, **kw)

    def ok(self, resp: httpx.Response, status: int = 200) -> Any:
        assert resp.status_code == status, (
            f"{resp.request.method} {resp.request.url.path}: expected {status}, got "
            f"{resp.status_code} {resp.text[:2000]}"
        )
        return resp.json()

    def fail(self, message: str) -> None:
        raise AssertionError(f"{message}\n{self.diagnostics()}")

    def poll(
        self, fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str
    ):
        deadline = time.monotonic() + timeout
        while True:
            value = fetch()
            if done(value):
                return value
            if time.monotonic() > deadline:
                self.fail(
                    f"timed out after {timeout:.0f}s waiting for {what}; last seen: "
                    f"{json.dumps(value, default=str)[:3000]}"
                )
            time.sleep(0.25)

    def list_all(self, path: str, **params) -> list[dict[str, Any]]:
        """Every item of a cursor-paginated list, in the server's order."""
        items: list[dict[str, Any]] = []
        params.setdefault("limit", 50)
        for _ in range(200):
            page = self.ok(self.get(path, params=params))
            assert page.get("object") == "list" and isinstance(page.get("data"), list), page
            items += page["data"]
            if not page.get("has_more") or not page["data"]:
                return items
            params["after"] = page["data"][-1]["id"]
        self.fail(f"{path}: more than 200 pages")

    # --- files
    def upload(self, path: Path, purpose: str, filename: str | None = None) -> httpx.Response:
        with open(path, "rb") as f:
            return self.post(
                "/v1/files",
                files={"file": (filename or path.name, f, "application/jsonl")},
                data={"purpose": purpose},
            )

    def wait_file(self, file_id: str, timeout: float = FILE_TIMEOUT_S) -> dict[str, Any]:
        return self.poll(
            lambda: self.ok(self.get(f"/v1/files/{file_id}")),
            lambda f: f.get("status") in ("processed", "error"),
            timeout,
            f"file {file_id} to be validated",
        )

    def processed_file(self, path: Path, purpose: str) -> dict[str, Any]:
        uploaded = self.ok(self.upload(path, purpose))
        file = self.wait_file(uploaded["id"])
        if file["status"] != "processed":
            self.fail(f"{path.name} ({purpose}) was not processed: {file}")
        return file

    def file_ids(self) -> list[str]:
        return [f["id"] for f in self.list_all("/v1/files")]

    # --- jobs
    @staticmethod
    def tiny_job(
        training_file: str,
        replay_file: str | None = None,
        *,
        fraction: float = 0.25,
        n_epochs: float = 1,
        seed: int = 7,
        **extra: Any,
    ) -> dict[str, Any]:
        """A job body small enough for a CPU test: llama-tiny, batch 4 x 64 tokens.

        The 30 GSM8K examples pack into about 98 target sequences, so a job takes about
        n_epochs * 98 / (4 * (1 - r)) steps: ~33 per epoch with r = 0.25, ~25 without replay.
        Lengths are set through n_epochs (the step count follows from the data) and read back
        from the job's `progress.total_steps`.
        """
        hp: dict[str, Any] = {"n_epochs": n_epochs, "batch_size": 4, "seq_len": 64}
        hp["eval_sequences"] = 4
        body: dict[str, Any] = {
            "model": TINY,
            "training_file": training_file,
            "seed": seed,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        }
        if replay_file is not None:
            body["replay"] = {"dataset": replay_file, "fraction": fraction}
        body.update(extra)
        return body

    def create_job(self, body: dict[str, Any], headers: dict[str, str] | None = None):
        job = self.ok(self.post("/v1/fine_tuning/jobs", json=body, headers=headers or {}))
        assert job.get("object") == "fine_tuning.job" and str(job.get("id")).startswith("ftjob-"), (
            job
        )
        if job["id"] not in self.job_ids:
            self.job_ids.append(job["id"])
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        return self.ok(self.get(f"/v1/fine_tuning/jobs/{job_id}"))

    def wait_job(self, job_id: str, *statuses: str, timeout: float = JOB_TIMEOUT_S):
        def done(job: dict[str, Any]) -> bool:
            if job["status"] in statuses:
                return True
            if job["status"] in TERMINAL:
                self.fail(
                    f"job {job_id} ended {job['status']} while waiting for {statuses}: "
                    f"error={job.get('error')} progress={job.get('progress')}"
                )
            return False

        return self.poll(lambda: self.job(job_id), done, timeout, f"job {job_id} to be {statuses}")

    def settled_step(self, job_id: str, quiet: float = 3, timeout: float = 90) -> int:
        """The job's progress step once it has not moved for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        step, since = self.job(job_id)["progress"]["step"], time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.job(job_id)["progress"]["step"]
            if now != step:
                step, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return step
        self.fail(f"job {job_id} still advancing (step {step}) {timeout}s after it was stopped")

    def pause_mid_run(self, job_id: str) -> int:
        """Pause the job once it has done 3 steps; check it stopped mid-run on a checkpoint of
        its last step. Returns the job's total steps."""
        total = self.wait_step(job_id, 3)["progress"]["total_steps"]
        self.ok(self.post(f"{JOBS}/{job_id}/pause"))
        job = self.wait_job(job_id, "paused", timeout=120)
        step = self.settled_step(job_id)
        assert 0 < step < total, (job["progress"], step)
        assert self.checkpoints(job_id)[-1]["step_number"] == step
        return total

    def wait_step(self, job_id: str, step: int, timeout: float = JOB_TIMEOUT_S):
        """Wait until the job is running and has completed at least `step` steps."""

        def done(job: dict[str, Any]) -> bool:
            if job["status"] in TERMINAL:
                self.fail(f"job {job_id} ended {job['status']} before step {step}: {job}")
            return job["status"] == "running" and (job.get("progress") or {}).get("step", 0) >= step

        return self.poll(lambda: self.job(job_id), done, timeout, f"job {job_id} at step {step}")

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """All events, oldest first (the API lists newest first)."""
        events = self.list_all(f"/v1/fine_tuning/jobs/{job_id}/events")
        return sorted(reversed(events), key=lambda e: e["created_at"])

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        ckpts = self.list_all(f"/v1/fine_tuning/jobs/{job_id}/checkpoints")
        return sorted(ckpts, key=lambda c: c["step_number"])

    def metrics(self, job_id: str, max_points: int = 100_000) -> list[dict[str, Any]]:
        body = self.ok(
            self.get(f"/v1/fine_tuning/jobs/{job_id}/metrics", params={"max_points": max_points})
        )
        records = body["data"] if isinstance(body, dict) else body
        assert isinstance(records, list), body
        return records

    def close(self) -> None:
        """Cancel this team's unfinished jobs so that the next test finds the workers free."""
        try:
            pending = []
            for job_id in self.job_ids:
                resp = self.get(f"/v1/fine_tuning/jobs/{job_id}")
                if resp.status_code == 200 and resp.json()["status"] not in TERMINAL:
                    self.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
                    pending.append(job_id)
            deadline = time.monotonic() + 90
            while pending and time.monotonic() < deadline:
                pending = [j for j in pending if self.job(j)["status"] not in TERMINAL]
                time.sleep(0.5)
        except (httpx.HTTPError, AssertionError):
            pass  # cleanup is best effort; the session teardown ends every process anyway
        finally:
            self.http.close()


def wait_ready(url: str, proc: Proc, timeout: float, diagnostics: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive:
            raise AssertionError(f"{proc.name} exited before it was ready\n{diagnostics()}")
        try:
            resp = httpx.get(f"{url}/readyz", timeout=5)
            if resp.status_code == 200:
                return
            last = f"{resp.status_code} {resp.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"{url}/readyz not 200 after {timeout}s (last: {last})\n{diagnostics()}")


# ---------------------------------------------------------------------------- the deployment
class Service:
    """The session's API server and workers on PostgreSQL + Redis."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env
        self.data_dir = Path(env["REPLAYFT_DATA_DIR"])
        self.tmp_dir = Path(env["TMPDIR"])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: Proc | None = None
        self.inference: Proc | None = None  # started by the first test that asks for it
        env.setdefault("REPLAYFT_INFERENCE_URL", f"http://127.0.0.1:{free_port()}")
        self.inference_url = env["REPLAYFT_INFERENCE_URL"]
        self.workers: list[Proc] = []
        self._n = 0
        self._admin_key: str | None = None

    def _start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        self._n += 1
        log = self.root / f"{self._n:02d}-{name}.log"
        return Proc(name, ["cli.main", *args], {**self.env, **(env or {})}, log, cwd=self.root)

    def start_api(self) -> None:
        self.api = self._start("api", "api", "--host", "127.0.0.1", "--port", str(self.port))
        wait_ready(self.url, self.api, 120, self.diagnostics)

    def start_worker(
        self,
        queues: str = "training,files",
        *,
        wait: bool = False,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """A `replayft worker` with one process; `training_workers` lists those that train.
        With `wait`, returns once Celery says the worker is ready to take tasks; `env` adds
        settings of this worker's own."""
        kind = "worker" if "training" in queues else "files-worker"
        worker = self._start(
            f"{kind}{len(self.workers) + 1}",
            "worker",
            "--queues",
            queues,
            "--concurrency",
            "1",
            env=env,
        )
        worker.queues = queues.split(",")
        self.workers.append(worker)
        if wait:
            worker.wait_for_log(" ready.", 120, self.diagnostics)
        return worker

    def start_inference(self) -> str:
        """The model-serving process (`replayft inference`) at REPLAYFT_INFERENCE_URL, which the
        API was started with; started once, by the first test that needs completions."""
        if self.inference is None or not self.inference.alive:
            self.inference = self._start("inference", "inference")
            deadline = time.monotonic() + 120
            while True:
                if not self.inference.alive:
                    raise AssertionError(f"inference exited at start-up\n{self.diagnostics()}")
                try:
                    if httpx.get(f"{self.inference_url}/healthz", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"inference not ready after 120 s\n{self.diagnostics()}")
                time.sleep(0.5)
        return self.inference_url

    def inference_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.inference_url}/stats", timeout=10).json()

    def training_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.alive and "training" in w.queues]

    def cli(self, *args: str):
        return cli(self.env, self.root, *args)

    def diagnostics(self) -> str:
        procs = ([self.api] if self.api else []) + self.workers
        procs += [self.inference] if self.inference else []
        return "\n".join(p.tail() for p in procs)

    def admin_key(self) -> str:
        """This deployment's admin key, minted once the way an operator does (`replayft keys
        create --admin`)."""
        if self._admin_key is None:
            result = self.cli("keys", "create", "--team", "tests-admin", "--admin")
            assert result.returncode == 0, (
                f"keys create failed: {result.stderr}\n{self.diagnostics()}"
            )
            key = result.stdout.strip()
            assert key and len(key.split()) == 1, (
                f"keys create should print only the key: {result.stdout!r}"
            )
            self._admin_key = key
        return self._admin_key

    def team(self, label: str) -> Team:
        """A new team with a key of its own, made with the admin key over HTTP: one request, where
        a `replayft keys create` per test paid a Python start-up (~1.5 s of CPU) each time. The
        command's own path is tested in tests/reliability/test_keys.py."""
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", label)[:40] + "-" + secrets.token_hex(3)
        resp = httpx.post(
            f"{self.url}/v1/admin/keys",
            json={"team": name},
            headers={"Authorization": f"Bearer {self.admin_key()}"},
            timeout=60,
        )
        assert resp.status_code == 200, (
            f"POST /v1/admin/keys: {resp.status_code} {resp.text[:500]}\n{self.diagnostics()}"
        )
        return Team(self.url, resp.json()["key"], name, self.diagnostics)

    def stop(self) -> None:
        procs = [*self.workers, *([self.api] if self.api else [])]
        procs += [self.inference] if self.inference else []
        for proc in procs:  # all shut down at once: the grace periods overlap
            proc.terminate()
        for proc in procs:
            proc.stop()


class RedisServer:
    """A redis-server of a test's own on a free port, without persistence: `kill` then `start`
    gives a broker restarted empty. Never the machine's own Redis."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.popen: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.root)]
        with open(self.root / f"redis-{self.port}.log", "ab") as log:
            self.popen = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=30)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=2)


# ---------------------------------------------------------------------------- PostgreSQL, Redis
# Which servers the service tests use, decided once per test process:
#   PostgreSQL: the one REPLAYFT_TEST_PG_ADMIN (a libpq DSN, with REPLAYFT_TEST_PG_URL, the
#     SQLAlchemy URL of the same server without a database) configures; else the machine's own on
#     127.0.0.1:5432 (user postgres, no password) if it answers; else a throwaway server of our own.
#   Redis: the one REPLAYFT_TEST_REDIS (host:port) configures; else 127.0.0.1:6379 if it answers;
#     else a throwaway redis-server of our own.
# A configured server that does not answer fails the tests (no silent fallback); a throwaway one
# lives until the test process exits. `scripts/install.sh --dev` installs initdb, pg_ctl and
# redis-server where no server is running.
PG_DEFAULT_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS_DEFAULT = "127.0.0.1:6379"


@dataclass(frozen=True)
class Backing:
    pg_admin_dsn: str  # libpq DSN of the maintenance database
    pg_url_base: str  # SQLAlchemy URL of the server, a database name to be appended
    redis_host: str
    redis_port: int


def _postgres_answers(dsn: str) -> str | None:
    """None if PostgreSQL at `dsn` accepts a connection, else why not."""
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
        return None
    except psycopg.OperationalError as exc:
        return str(exc).strip()


def _redis_answers(host: str, port: int) -> str | None:
    client = redis.Redis(host=host, port=port, socket_connect_timeout=5, socket_timeout=10)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return str(exc)
    finally:
        client.close()


def _backing_postgres() -> tuple[str, str]:
    configured = os.environ.get("REPLAYFT_TEST_PG_ADMIN")
    if configured:
        url = os.environ.get("REPLAYFT_TEST_PG_URL", PG_DEFAULT_URL)
        problem = _postgres_answers(configured)
        if problem:
            pytest.fail(f"REPLAYFT_TEST_PG_ADMIN ({configured}) does not answer: {problem}")
        return configured, url
    if _postgres_answers(PG_DEFAULT_ADMIN) is None:
        return PG_DEFAULT_ADMIN, PG_DEFAULT_URL
    server = ThrowawayPostgres()
    atexit.register(server.remove)
    server.start()
    return server.admin_dsn, server.url_base


def _backing_redis() -> tuple[str, int]:
    configured = os.environ.get("REPLAYFT_TEST_REDIS")
    host, _, port = (configured or REDIS_DEFAULT).rpartition(":")
    problem = _redis_answers(host, int(port))
    if problem is None:
        return host, int(port)
    if configured:
        pytest.fail(f"REPLAYFT_TEST_REDIS ({configured}) does not answer: {problem}")
    if not shutil.which("redis-server"):
        pytest.fail(
            f"no Redis at {REDIS_DEFAULT} ({problem}) and no redis-server to start one: "
            "scripts/install.sh --dev installs it, or set REPLAYFT_TEST_REDIS=host:port"
        )
    server = RedisServer(Path(tempfile.mkdtemp(prefix="replayft-redis-")))
    atexit.register(server.kill)
    server.start()
    return "127.0.0.1", server.port


@functools.cache
def backing() -> Backing:
    """The PostgreSQL and Redis servers of this test process (see above); started on first use."""
    admin_dsn, url_base = _backing_postgres()
    host, port = _backing_redis()
    return Backing(admin_dsn, url_base, host, port)


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        pytest.fail(
            f"no PostgreSQL answers at 127.0.0.1:5432 and {name} is missing to start one: "
            "scripts/install.sh --dev installs it, or set REPLAYFT_TEST_PG_ADMIN"
        )
    return str(found if isinstance(found, str) else found[-1])


class ThrowawayPostgres:
    """A PostgreSQL server of our own on a free port (initdb + pg_ctl), so a test can stop and
    start it, and the service tests have one on a machine without. PostgreSQL refuses to run as
    root: as root it runs as the `postgres` user."""

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
        self.url_base = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"
        self.url = f"{self.url_base}/postgres"
        self.admin_dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

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


def database_url(name: str) -> str:
    return f"{backing().pg_url_base}/{name}"


def create_database() -> str:
    name = f"replayft_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(backing().pg_admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(backing().pg_admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


REDIS_CLAIM_KEY = "replayft-tests:claimed-by"


def _redis_db(index: int) -> redis.Redis:
    b = backing()
    return redis.Redis(host=b.redis_host, port=b.redis_port, db=index, socket_timeout=10)


def claim_redis_db() -> int:
    """An empty Redis database index, marked as ours so that no concurrent run takes it too."""
    for index in range(15, 1, -1):
        r = _redis_db(index)
        try:
            if r.dbsize() == 0 and r.set(REDIS_CLAIM_KEY, RUN_TOKEN, nx=True):
                return index
        finally:
            r.close()
    pytest.fail("no empty Redis database index among 2..15 to run the service tests in")


def release_redis_db(index: int) -> None:
    r = _redis_db(index)
    try:
        if r.get(REDIS_CLAIM_KEY) == RUN_TOKEN.encode():
            r.flushdb()
    finally:
        r.close()


@contextmanager
def own_database() -> Iterator[str]:
    """A fresh database on the session's PostgreSQL for one deployment: -> its SQLAlchemy URL.
    Dropped on exit."""
    name = create_database()
    try:
        yield database_url(name)
    finally:
        drop_database(name)


@contextmanager
def own_redis_db() -> Iterator[str]:
    """An empty database index of the session's Redis for one deployment: -> its broker URL.
    Flushed on exit."""
    index = claim_redis_db()
    b = backing()
    try:
        yield f"redis://{b.redis_host}:{b.redis_port}/{index}"
    finally:
        release_redis_db(index)


# ---------------------------------------------------------------------------- the browser
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browser download fails here
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # no connections of Chromium's own: this machine's network refuses them
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def dashboard_browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright, for tests of the built dashboard."""
    try:
        from playwright import sync_api as playwright_sync
    except ImportError:
        pytest.fail("playwright is missing: scripts/install.sh --dev installs the dev extras")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install.sh --dev installs Debian's chromium")
    if not (REPO / "frontend" / "dist" / "index.html").is_file():
        pytest.fail("the dashboard is not built: scripts/install.sh runs npm ci && npm run build")
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def multipart(filename: bytes, purpose: bytes = b"fine-tune") -> tuple[bytes, str]:
    """A multipart body written byte for byte (no client escapes the file name)."""
    boundary = b"replayft-test-boundary"
    body = b"".join(
        [
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="purpose"\r\n\r\n' + purpose + b"\r\n",
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n',
            b"Content-Type: application/jsonl\r\n\r\n",
            b'{"text": "hello"}\n\r\n',
            b"--" + boundary + b"--\r\n",
        ]
    )
    return body, f"multipart/form-data; boundary={boundary.decode()}"


def sweep_body(target: str, replay: str, **extra) -> dict:
    """A valid small sweep: two configurations, three reference subsets (four jobs)."""
    hp = {"n_epochs": 1, "batch_size": 4, "seq_len": 64, "eval_sequences": 4}
    body = {
        "model": Team.tiny_job(target)["model"],
        "training_file": target,
        "replay": {"dataset": replay},
        "seed": 7,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        "replay_fractions": [0, 0.25],
        "reference_subsets": [0.25, 0.5, 1],
    }
    body.update(extra)
    return body
