"""Starting multi-process training: torchrun as a child process, and the bridge that lets a
caller's hooks see the ranks' progress.

Design
- Launch. `torchrun --nproc-per-node P [--nnodes N ...] -m replay_engine.launcher run ...`
  starts P processes per machine; each reads RANK / WORLD_SIZE / LOCAL_RANK from the environment
  (`distributed.setup`) and joins one process group: NCCL on GPUs, gloo on CPU (which is how the tests run
  two processes on a laptop). A single process needs no launcher and no process group; every
  helper here is then a no-op, so the one-process path is the plain loop it always was.
- Worker bridge. `run` (the torchrun entry point) gives rank 0 `FileHooks`: metrics and
  checkpoint records go to an append-only `events.jsonl`, a `stop` file asks it to stop, and the
  outcome lands in `result.json` or `error-<rank>.json`. The Celery worker tails those files and
  drives its database hooks from them (worker/runner.py), so its hooks work unchanged whether
  the engine runs in its own process or in eight others.
- Several machines. torchrun's static rendezvous (`Rendezvous`): node 0 hosts it and holds
  global rank 0, so the machine that runs `launch` is the one that reports; nodes 1..N-1 run
  `join`, which only keeps their ranks alive. All machines share `out_dir` (and ideally the
  token cache) on a common filesystem. Until every machine has arrived no rank runs; a stop
  asked for in that time just ends the launch, and a rendezvous timeout is `NodesMissing`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .hooks import NoHooks
from .spec import JobSpec, SpecError

# The torchrun agent (`python -m replay_engine.launcher agent`) imports this module and needs
# none of the engine, so the trainer and the data modules are imported where they are used.
if TYPE_CHECKING:
    from .hooks import TrainingHooks
    from .trainer import TrainResult

# Files of the worker bridge, inside the control folder
EVENTS_FILE, STOP_FILE, RESULT_FILE = "events.jsonl", "stop", "result.json"


# ---------------------------------------------------------------------------- worker bridge
class FileHooks:
    """Rank 0's hooks under the worker: records to `events.jsonl`, stop when `stop` exists."""

    def __init__(self, control_dir: Path):
        self.dir = Path(control_dir)
        self._events = open(self.dir / EVENTS_FILE, "a")  # noqa: SIM115 - closed by close()
        # rank 0 runs only once torchrun's rendezvous is complete: tell the launcher
        self._write({"started": os.getpid()})

    def _write(self, event: dict[str, Any]) -> None:
        self._events.write(json.dumps(event) + "\n")
        self._events.flush()

    def on_metrics(self, record: dict[str, Any]) -> None:
        self._write({"metrics": record})

    def on_checkpoint(self, path: Path, step: int) -> None:
        self._write({"checkpoint": {"path": str(path), "step": step}})

    def should_stop(self, step: int) -> bool:
        return (self.dir / STOP_FILE).exists()

    def close(self) -> None:
        self._events.close()


def error_record(exc: BaseException) -> dict[str, Any]:
    """What the worker needs to rebuild a readable error in its own process."""
    record: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, SpecError):
        record["errors"] = exc.errors
    for attr in ("path", "line", "reason"):  # DataFormatError
        if hasattr(exc, attr):
            record[attr] = getattr(exc, attr)
    return record


@dataclass(frozen=True)
class Rendezvous:
    """Where one machine of a multi-machine job meets the others: torchrun's static rendezvous.

    Node 0 hosts the rendezvous store at `master` (host:port) and its first process is global
    rank 0, which reads the weights, prepares the data first and writes every report, so the
    machine whose worker holds the job is the one that reports. Nodes 1..N-1 connect to it. If
    not all N machines arrive within `timeout` seconds, every torchrun gives up."""

    node_rank: int
    master: str
    timeout: float = 600.0


def launch_command(
    spec_file: Path,
    out_dir: Path,
    control_dir: Path,
    *,
    gpus_per_node: int,
    nodes: int = 1,
    rendezvous: Rendezvous | None = None,
) -> list[str]:
    """The command for one machine of a job: torchrun (run in-process by our `agent`
    subcommand, which first ties its life to its parent's) starting `run` on every rank."""
    cmd = [sys.executable, "-m", "replay_engine.launcher", "agent"]
    cmd.append(f"--nproc-per-node={gpus_per_node}")
    if nodes == 1:
        cmd.append("--standalone")  # a private rendezvous on a free local port
    else:
        if rendezvous is None:
            raise SpecError(
                [
                    (
                        "distributed.nodes",
                        "a multi-machine run needs each machine's node rank and node 0's "
                        "address (replayft train --node-rank K --master host:port)",
                    )
                ]
            )
        host, _, port = rendezvous.master.rpartition(":")
        cmd += [
            f"--nnodes={nodes}",
            f"--node-rank={rendezvous.node_rank}",
            f"--master-addr={host}",
            f"--master-port={port}",
            f"--rdzv-conf=timeout={max(1, round(rendezvous.timeout))}",
        ]
    return cmd + [
        "-m",
        "replay_engine.launcher",
        "run",
        f"--spec={spec_file}",
        f"--out={out_dir}",
        f"--control={control_dir}",
    ]


def _start(cmd: list[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _end(proc: subprocess.Popen) -> None:
    """Terminate a torchrun agent (it passes SIGTERM on to its ranks); kill it if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch(
    spec: JobSpec,
    out_dir: str | Path,
    hooks: TrainingHooks | None = None,
    *,
    rendezvous: Rendezvous | None = None,
    poll_seconds: float = 0.2,
) -> TrainResult:
    """`trainer.train` for a multi-process spec: runs torchrun as a child process and drives
    `hooks` from rank 0's bridge files, so a caller (the worker, the CLI) sees the same calls it
    would get from an in-process run. Raises the failing rank's error, rebuilt.

    For a multi-machine spec this is node 0 (`rendezvous.node_rank == 0`); the other machines
    run `join`. A stop asked for before the ranks have started (they wait for every machine to
    arrive) ends the launch at once, as stopped."""
    from .checkpoint import latest_checkpoint, read_meta
    from .trainer import TrainResult

    if rendezvous is not None and rendezvous.node_rank != 0:
        raise ValueError("launch() runs node 0; the other machines run join()")
    hooks = hooks or NoHooks()
    out_dir = Path(out_dir)
    control = out_dir / ".launch"
    shutil.rmtree(control, ignore_errors=True)
    control.mkdir(parents=True)
    spec_file = control / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    nodes = spec.distributed.nodes
    cmd = launch_command(
        spec_file,
        out_dir,
        control,
        gpus_per_node=spec.distributed.gpus_per_node,
        nodes=nodes,
        rendezvous=rendezvous,
    )
    began = time.monotonic()
    proc = _start(cmd, out_dir / "launch.log")
    events = _EventTail(control / EVENTS_FILE)
    asked_to_stop = False
    try:
        while True:
            rc = proc.poll()
            events.dispatch(hooks)
            if rc is not None:
                break
            if not asked_to_stop and hooks.should_stop(events.step):
                asked_to_stop = True
                if nodes > 1 and not events.started:  # waiting for the other machines
                    _end(proc)
                    resume = latest_checkpoint(out_dir)
                    done = int(read_meta(resume)["step"]) if resume else 0
                    return TrainResult(out_dir, done, 0, True, resume, {})
                (control / STOP_FILE).touch()  # rank 0 sees it after its current step
            time.sleep(poll_seconds)
    finally:
        _end(proc)  # we are being torn down: take the ranks with us
    if rc != 0:
        waited = time.monotonic() - began
        if nodes > 1 and not events.started and waited >= rendezvous.timeout:
            raise NodesMissing(
                f"the job's other {nodes - 1} machine(s) did not all join within "
                f"{rendezvous.timeout:g}s"
            )
        raise _rank_error(control, rc, out_dir / "launch.log")
    outcome = json.loads((control / RESULT_FILE).read_text())
    final = outcome["final_checkpoint"]
    return TrainResult(
        out_dir,
        outcome["steps_completed"],
        outcome["total_steps"],
        outcome["stopped"],
        Path(final) if final else None,
        outcome["summary"],
    )


def join(
    spec: JobSpec,
    out_dir: str | Path,
    rendezvous: Rendezvous,
    *,
    should_leave: Callable[[], bool] = lambda: False,
    poll_seconds: float = 1.0,
) -> int:
    """Node K > 0 of a multi-machine job: run this machine's ranks until the job ends, and
    return torchrun's exit status (0: the ranks finished or stopped with the others). Node 0
    reports everything; `should_leave()` returning True (the job was given up) ends the ranks
    here, which makes the other machines' ranks fail too. `out_dir` is the shared run folder."""
    if rendezvous.node_rank == 0:
        raise ValueError("node 0 runs launch(); join() is for the other machines")
    out_dir = Path(out_dir)
    # our own folder: node 0 recreates .launch when it starts, perhaps after we wrote to it
    own = out_dir / f".node-{rendezvous.node_rank}"
    own.mkdir(parents=True, exist_ok=True)
    spec_file = own / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    cmd = launch_command(
        spec_file,
        out_dir,
        out_dir / ".launch",  # ranks record their errors where node 0 looks for them
        gpus_per_node=spec.distributed.gpus_per_node,
        nodes=spec.distributed.nodes,
        rendezvous=rendezvous,
    )
    proc = _start(cmd, own / "launch.log")
    try:
        while proc.poll() is None:
            if should_leave():
                break
            time.sleep(poll_seconds)
    finally:
        _end(proc)
    return proc.returncode


class _EventTail:
    """Reads the complete lines appended to events.jsonl since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset, self.step = path, 0, 0
        self.started = False  # rank 0 is up: every machine has joined

    def dispatch(self, hooks: TrainingHooks) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        for line in chunk[:end].splitlines():
            event = json.loads(line)
            self.started = True
            if "started" in event:
                continue
            if "metrics" in event:
                record = event["metrics"]
                if record.get("type") == "train":
                    self.step = record["step"]
                hooks.on_metrics(record)
            else:
                hooks.on_checkpoint(Path(event["checkpoint"]["path"]), event["checkpoint"]["step"])


def _log_tail(path: Path, lines: int = 25, max_chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no launch.log)"
    return "\n".join(text.splitlines()[-lines:])[-max_chars:]


class RankFailed(RuntimeError):
    """A training process failed with an error that has no richer type here."""


class NodesMissing(RankFailed):
    """A multi-machine job's rendezvous timed out: some machines never arrived."""


def _rank_error(control: Path, rc: int, log_path: Path) -> Exception:
    """The first error a rank recorded (the others usually just lost their peers), rebuilt.
    Ranks that die by a signal or in native code record nothing, and a lone survivor may record
    only a lost peer, so a RankFailed also carries the end of launch.log as a note (for server
    logs and tracebacks, not the client's message: it holds server paths), where torchrun
    names each failed rank and how it exited."""
    files = sorted(control.glob("error-*.json"), key=lambda f: f.stat().st_mtime)
    if not files:
        error = RankFailed(f"the training processes exited with status {rc} (see launch.log)")
    else:
        record = json.loads(files[0].read_text())
        kind, message = record["type"], record["message"]
        if kind == "SpecError":
            return SpecError([tuple(e) for e in record["errors"]])
        if kind == "DataFormatError":
            from .data import DataFormatError

            return DataFormatError(record["path"], record["line"], record["reason"])
        if kind == "TrainingDiverged":
            from .trainer import TrainingDiverged

            return TrainingDiverged(message)
        error = RankFailed(f"{kind}: {message}")
    error.add_note(f"the end of {log_path}:\n{_log_tail(log_path)}")
    return error


def run_main(spec_file: str, out_dir: str, control_dir: str | None) -> int:
    """One rank of a launched job: train with FileHooks on rank 0, record the outcome."""
    from .trainer import train

    spec = JobSpec.model_validate_json(Path(spec_file).read_text())
    rank = int(os.environ.get("RANK", "0"))
    control = Path(control_dir) if control_dir else None
    hooks = FileHooks(control) if control is not None and rank == 0 else None
    try:
        result = train(spec, out_dir, hooks)
    except BaseException as exc:
        if control is not None:
            (control / f"error-{rank}.json").write_text(json.dumps(error_record(exc)))
        raise
    finally:
        if hooks is not None:
            hooks.close()
    if control is not None and rank == 0:
        outcome = {
            "steps_completed": result.steps_completed,
            "total_steps": result.total_steps,
            "stopped": result.stopped,
            "final_checkpoint": str(result.final_checkpoint) if result.final_checkpoint else None,
            "summary": result.summary,
        }
        tmp = control / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(outcome))
        os.replace(tmp, control / RESULT_FILE)
    return 0


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so a killed worker leaves no
    child running on (torchrun's agent passes SIGTERM on to the ranks; `replayft serve`'s
    workers and a worker's maintenance process use it too)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the parents' own teardown still ends their children


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:  # torchrun itself, tied to the parent that launched it
        die_with_parent()
        from torch.distributed.run import main as torchrun

        torchrun(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m replay_engine.launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("agent", help="torchrun's own arguments follow (used by launch())")
    run = sub.add_parser("run", help="one rank of a torchrun-launched training job")
    run.add_argument("--spec", required=True, help="the JobSpec as JSON")
    run.add_argument("--out", required=True, help="the run folder (shared by all ranks)")
    run.add_argument("--control", help="folder for the worker bridge files")
    args = parser.parse_args(argv)
    return run_main(args.spec, args.out, args.control)


if __name__ == "__main__":
    sys.exit(main())
