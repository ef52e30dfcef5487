"""The README's commands work as written: every ```bash block runs, in order, in a fresh folder
(with this checkout's `examples/`, `scripts/` and the test's own venv as `.venv`), so that the
README cannot drift from the code.

How a line runs, and the few things the test changes:
- Each `## ` section is a new terminal: its lines run one at a time in bash, the environment
  (`export`, `source`) carried from one line to the next, with the venv active from the start as
  the README asks. What a section started in the background is stopped when it ends.
- `replayft serve|api|worker|maintenance|inference` are long-running: they start in the background (the README's
  "leave it running"), and the next line waits until `serve` or `api` answers /readyz.
- The long runs (`jobs submit`, `sweeps submit`, `demo`) get `--set n_epochs=0.02`, the flag the
  README shows for a short trial.
- `PREFIX-...` stands for an id that only exists at run time: it becomes the last id of that
  kind an earlier line printed.
- Addresses: port 8000 becomes a free port (for the client commands, whose default it is:
  $REPLAYFT_URL), and so does the model-serving process's 8001 ($REPLAYFT_INFERENCE_URL, which
  `replayft inference`, `replayft api` and `replayft serve` read); the production section's PostgreSQL and Redis URLs become a database and a
  Redis index of the test's own.
- Not run: `scripts/install.sh` (it installs from the network; the test checks its syntax and
  its last line) and so the test command after it (the suite this test belongs to).
Every line must exit 0, and `curl` must answer JSON that is not an error.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from servicekit import (
    REPO,
    RUN_TOKEN,
    end_survivors,
    free_port,
    own_database,
    own_redis_db,
    service_env,
)

README = REPO / "README.md"
SHORTEN = "--set n_epochs=0.02"  # 3 steps of the quickstart or the demo
LONG_RUNS = ("replayft jobs submit", "replayft sweeps submit", "replayft demo")
BACKGROUND = re.compile(r"^(\.venv/bin/)?replayft (serve|api|worker|maintenance|inference)\b")
SERVES_HTTP = re.compile(r"^(\.venv/bin/)?replayft (serve|api)\b")
NOT_RUN = re.compile(r"^scripts/install\.sh\b")
PLACEHOLDER = re.compile(r"\b(key|sweep|ftjob|file)-\.\.\.")
PRODUCTION_DATABASE = "postgresql+psycopg://user@db/replayft"
PRODUCTION_BROKER = "redis://redis:6379/0"
COMMENT = re.compile(r"\s+#(\s|$)")  # a trailing comment: it keeps its place
LINE_TIMEOUT_S = 600
READY_TIMEOUT_S = 180
TAG = f"{RUN_TOKEN}-readme"  # marks what this test starts, so that it can end only that


@dataclass
class Block:
    section: str
    lines: list[str]


def readme_blocks(text: str) -> list[Block]:
    """The ```bash blocks with their `## ` section; comment-only lines dropped, `\\` joined."""
    blocks: list[Block] = []
    section, lines, inside = "", [], False
    for raw in text.splitlines():
        if not inside and raw.startswith("## "):
            section = raw[3:].strip()
        elif not inside and raw.strip() == "```bash":
            inside, lines = True, []
        elif inside and raw.strip() == "```":
            inside = False
            blocks.append(Block(section, lines))
        elif inside:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + raw.strip()
            elif raw.strip() and not raw.strip().startswith("#"):
                lines.append(raw.strip())
    assert not inside, "README.md: a ```bash block is not closed"
    return blocks


@dataclass
class Session:
    """One terminal: environment, background processes, and every id printed so far."""

    root: Path
    env: dict[str, str]
    port: int
    addresses: dict[str, str]  # the README's production address -> the test's own
    ids: dict[str, str]
    background: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    def substitute(self, line: str) -> str:
        line = line.replace("localhost:8000", f"127.0.0.1:{self.port}")
        line = line.replace("--port 8000", f"--port {self.port}")
        for address, ours in self.addresses.items():
            line = line.replace(address, ours)

        def known_id(match: re.Match) -> str:
            prefix = match[1]
            if prefix not in self.ids:
                self.fail(f"{match[0]}: no earlier line printed a {prefix} id")
            return self.ids[prefix]

        line = PLACEHOLDER.sub(known_id, line)
        command = COMMENT.split(line, 1)[0].rstrip()
        if command.startswith(LONG_RUNS):
            line = line.replace(command, f"{command} {SHORTEN}", 1)
        if command.startswith("replayft serve") and "--port" not in command:
            line = line.replace(command, f"{command} --port {self.port}", 1)
        return line

    def note_ids(self, output: str) -> None:
        for prefix in ("key", "sweep", "ftjob", "file"):
            found = re.findall(rf"\b{prefix}-[0-9a-f]{{24}}\b", output)
            if found:
                self.ids[prefix] = found[-1]

    def fail(self, message: str) -> None:
        logs = "\n".join(
            f"----- {name} (log {log}) -----\n{tail(log)}" for name, _, log in self.background
        )
        transcript = "\n".join(self.transcript[-30:])
        pytest.fail(f"{message}\n===== transcript =====\n{transcript}\n{logs}", pytrace=False)

    def run(self, line: str) -> None:
        line = self.substitute(line)
        self.transcript.append(f"$ {line}")
        if BACKGROUND.match(line):
            self.start(line)
            return
        env_file = self.root / ".env-after"
        script = f"{line}\n__rc=$?\nenv -0 > {shlex.quote(str(env_file))}\nexit $__rc\n"
        started = time.monotonic()
        try:
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", script],
                cwd=self.root,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=LINE_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            self.transcript.append(str(exc.stdout or "") + str(exc.stderr or ""))
            self.fail(f"still running after {LINE_TIMEOUT_S}s: {line}")
        output = done.stdout + done.stderr
        self.transcript.append(output.rstrip())
        self.transcript.append(f"({time.monotonic() - started:.1f} s)")
        if done.returncode != 0:
            self.fail(f"exit status {done.returncode}: {line}")
        if line.startswith("curl "):
            try:
                body = json.loads(done.stdout)
            except ValueError:
                self.fail(f"not JSON: {line}")
            if isinstance(body, dict) and "error" in body:
                self.fail(f"an error answer: {line}")
        self.note_ids(output)
        pairs = env_file.read_bytes().split(b"\0")
        self.env = dict(
            p.decode().split("=", 1) for p in pairs if b"=" in p and not p.startswith(b"BASH_FUNC")
        )

    def start(self, line: str) -> None:
        name = line.split()[1] if line.startswith("replayft") else line.split()[0]
        log = self.root / f"background-{len(self.background)}-{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                cwd=self.root,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.background.append((name, proc, log))
        if SERVES_HTTP.match(line):
            self.wait_ready(proc)

    def wait_ready(self, proc: subprocess.Popen) -> None:
        started = time.monotonic()
        deadline = started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.fail(f"exited {proc.returncode} before answering /readyz")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200:
                    self.transcript.append(f"(ready after {time.monotonic() - started:.1f} s)")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.fail(f"no /readyz on port {self.port} after {READY_TIMEOUT_S}s")

    def close(self, check: bool) -> None:
        """Stop the background processes; with `check`, each must still have been running."""
        crashed = [name for name, proc, _ in self.background if proc.poll() is not None]
        for _, proc, _ in self.background:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for _, proc, _ in self.background:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        if check and crashed:
            self.fail(f"background command(s) ended before their section did: {crashed}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def check_install_script() -> None:
    """`scripts/install.sh` is not run here: it must parse and end by saying how to activate."""
    script = REPO / "scripts" / "install.sh"
    assert os.access(script, os.X_OK), f"{script} is not executable"
    parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
    assert "source .venv/bin/activate" in script.read_text().splitlines()[-1]


def sandbox(tmp_path: Path) -> Path:
    """A fresh folder that looks like a checkout after `scripts/install.sh`."""
    if sys.prefix == sys.base_prefix:
        pytest.fail("run the tests from the venv that scripts/install.sh makes (.venv)")
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("examples", "scripts"):
        (root / name).symlink_to(REPO / name)
    (root / ".venv").symlink_to(sys.prefix)
    return root


def test_readme_blocks_parse():
    blocks = readme_blocks(README.read_text())
    commands = [line for block in blocks for line in block.lines]
    assert any(c.startswith("replayft jobs submit") for c in commands), commands
    # the flag the test adds to long runs is one the README itself tells people about
    assert SHORTEN.split()[0] in README.read_text() and "n_epochs=" in README.read_text()
    assert PRODUCTION_DATABASE in README.read_text() and PRODUCTION_BROKER in README.read_text()


def test_what_the_test_changes_in_a_line(tmp_path):
    sweep = "sweep-" + "0a" * 12
    session = Session(tmp_path, {}, 4321, {PRODUCTION_BROKER: "redis://127.0.0.1:1/3"}, {})
    session.note_ids(f"{sweep} queued (4 jobs)\nkey-x is not an id")
    assert session.ids == {"sweep": sweep}
    cases = {
        "replayft jobs submit q.yaml --wait   # a comment": (
            f"replayft jobs submit q.yaml --wait {SHORTEN}   # a comment"
        ),
        "replayft serve --demo  # leave it": "replayft serve --demo --port 4321  # leave it",
        "curl -s localhost:8000/v1/sweeps/sweep-.../report": (
            f"curl -s 127.0.0.1:4321/v1/sweeps/{sweep}/report"
        ),
        f"export REPLAYFT_BROKER_URL={PRODUCTION_BROKER}": (
            "export REPLAYFT_BROKER_URL=redis://127.0.0.1:1/3"
        ),
    }
    for line, expected in cases.items():
        assert session.substitute(line) == expected
    with pytest.raises(pytest.fail.Exception, match="no earlier line printed a key id"):
        session.substitute("replayft keys revoke key-...")


@pytest.mark.slow  # minutes: a server, six jobs, a second deployment, the engine's demo
def test_every_readme_command_block_runs_as_written(tmp_path, cache_dir):
    check_install_script()
    root = sandbox(tmp_path)
    blocks = readme_blocks(README.read_text())
    venv_bin = str(Path(sys.prefix) / "bin")
    with own_database() as database_url, own_redis_db() as broker_url:
        base = service_env(
            TAG,
            REPLAYFT_CACHE_DIR=cache_dir,  # tokenized data shared with the other tests
            TMPDIR=tmp_path,
        )
        addresses = {PRODUCTION_DATABASE: database_url, PRODUCTION_BROKER: broker_url}
        base.update(VIRTUAL_ENV=sys.prefix, PATH=os.pathsep.join([venv_bin, base["PATH"]]))
        ids: dict[str, str] = {}
        sections = list(dict.fromkeys(block.section for block in blocks))
        try:
            for section in sections:
                port = free_port()
                env = {**base, "REPLAYFT_URL": f"http://127.0.0.1:{port}"}  # the client's default
                # the model-serving process (`replayft inference`, or the one `replayft serve`
                # starts) on a free port too, not its default 8001, which another run may hold
                env["REPLAYFT_INFERENCE_URL"] = f"http://127.0.0.1:{free_port()}"
                session = Session(root, env, port, addresses, ids)
                ran = False
                try:
                    for block in (b for b in blocks if b.section == section):
                        for line in block.lines:
                            if NOT_RUN.match(line):
                                session.transcript.append(f"(not run: {line})")
                                continue
                            session.run(line)
                    ran = True
                finally:
                    # kept beside the test's files: the timings of a passing run are worth a look
                    with open(tmp_path / "transcript.txt", "a") as f:
                        f.write(f"## {section}\n" + "\n".join(session.transcript) + "\n")
                    session.close(check=ran)
        finally:
            end_survivors(TAG)
