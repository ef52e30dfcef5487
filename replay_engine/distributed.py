"""Multi-process training on PyTorch's own stack: torchrun launches one process per GPU.

Design
- Launch. `torchrun --nproc-per-node P [--nnodes N ...] -m replay_engine.distributed run ...`
  starts P processes per machine; each reads RANK / WORLD_SIZE / LOCAL_RANK from the environment
  (`setup`) and joins one process group: NCCL on GPUs, gloo on CPU (which is how the tests run
  two processes on a laptop). A single process needs no launcher and no process group; every
  helper here is then a no-op, so the one-process path is the plain loop it always was.
- Data. Rank r takes slots `range(r, B, world)` of the deterministic global batch
  (`Mixture.batch(step, slots=...)`), so which sequences make up a step does not depend on the
  process count. Nothing about the data loader is per-rank state: resume still needs only the step.
- Loss. The loss is the token-weighted mean over the *global* batch: the ranks all-reduce their
  trainable-token counts before the forward pass, and each rank's backward uses
  `world * local_sum / global_count`, because DDP and FSDP average gradients over ranks. The
  sum of those averages is exactly the one-process gradient (tested: 2 ranks == 1 rank).
- Strategies. `ddp` wraps the model in DistributedDataParallel (replicated weights and AdamW state,
  gradients all-reduced in buckets during backward). `fsdp` applies FSDP2 (`fully_shard`) to each
  transformer block and then to the root, so parameters, gradients and AdamW moments are sharded
  and gathered one block at a time; on CUDA it gathers parameters in bf16 and reduces gradients in
  fp32 (fp32 master weights stay sharded).
  Only rank 0 reads the weights; the others build the model on the meta device and receive
  their shards from rank 0 after sharding (`fill_from_rank0`).
- Checkpoints. One format for every world size and strategy: rank 0 writes the ordinary
  Hugging Face folder plus `optimizer.state_dict()` in its single-process layout (integer ids in
  the order of `build_optimizer`'s groups). FSDP gathers the full state first with
  torch.distributed.checkpoint's `get_state_dict(full_state_dict=True, cpu_offload=True)`, and
  converts its name-keyed optimizer state to that layout; loading goes the other way with
  `set_optimizer_state_dict`. So a checkpoint written by 2 FSDP ranks resumes in 1 process, or in
  8 DDP ones. Every rank reads the checkpoint folder, so multi-machine runs need `out_dir` on a
  shared filesystem.
- Control. Only rank 0 writes metrics.jsonl and calls the caller's hooks; its `should_stop`
  answer is broadcast, so every rank stops after the same step and checkpoints together.
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
import contextlib
import datetime
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

import torch
import torch.distributed as dist

from .spec import SpecError

if TYPE_CHECKING:
    from .hooks import TrainingHooks
    from .spec import JobSpec
    from .trainer import TrainResult

# Files of the worker bridge, inside the control folder
EVENTS_FILE, STOP_FILE, RESULT_FILE = "events.jsonl", "stop", "result.json"


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; Dist() is the single-process case."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "ddp"
    owns_group: bool = False  # setup() created the process group, so teardown() ends it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(requested_device: str, strategy: str) -> tuple[Dist, torch.device]:
    """Read torchrun's environment, pick this rank's device and join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = requested_device == "cuda" or (
        requested_device == "auto" and torch.cuda.is_available()
    )
    if use_cuda and not torch.cuda.is_available():
        raise SpecError([("device", "cuda requested but no GPU is available")])
    if use_cuda:
        if local_rank >= torch.cuda.device_count():  # NCCL cannot share one GPU between ranks
            raise SpecError(
                [
                    (
                        "distributed.gpus_per_node",
                        f"more processes than the {torch.cuda.device_count()} GPUs of this machine",
                    )
                ]
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world == 1:
        return Dist(strategy=strategy), device
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(minutes=30),  # rank 0 may tokenize a large corpus first
            device_id=device if use_cuda else None,
        )
    return Dist(dist.get_rank(), world, local_rank, strategy, owns_group), device


def teardown(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- collectives
def all_reduce_sum(tensor: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, d: Dist, device: torch.device) -> bool:
    """Rank 0's `flag` on every rank."""
    if not d.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


# ---------------------------------------------------------------------------- the model
def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated decoder blocks (`model.layers` in Hugging Face decoders, also under peft)."""
    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList):
            return list(module)
    return []


def wrap_model(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """DDP- or FSDP2-wrap `model` (already on `device` for DDP; anywhere for FSDP)."""
    if not d.enabled:
        return model
    if d.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        kwargs: dict[str, Any] = {}
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16, reduce_dtype=torch.float32
            )
        for block in transformer_blocks(model):
            fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)  # the rest: embeddings, final norm, (tied) head
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model.to(device),
        device_ids=[device.index] if device.type == "cuda" else None,
        # the only buffers are rotary tables, identical on every rank; syncing them would add a
        # collective to each forward, which uneven eval loops cannot afford
        broadcast_buffers=False,
    )


def fill_from_rank0(
    model: torch.nn.Module, full_weights: dict[str, torch.Tensor], d: Dist, device: torch.device
) -> None:
    """After `fully_shard`: give the other ranks' empty (meta) models rank 0's weights, one
    tensor at a time, each rank keeping its shard. Buffers (rotary tables, not in every state
    dict) are broadcast too. So only rank 0 ever holds the whole model in host memory."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if not d.is_main:
        model.to_empty(device=device)
    set_model_state_dict(
        model,
        full_weights,
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside a DDP wrapper (FSDP2 modifies the model in place)."""
    ddp = torch.nn.parallel.DistributedDataParallel
    return model.module if isinstance(model, ddp) else model


def grad_sync(model: torch.nn.Module, d: Dist, sync: bool):
    """Context for one micro-batch's backward: reduce gradients only on the last one."""
    if not d.enabled:
        return contextlib.nullcontext()
    if d.strategy == "fsdp":
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if sync else model.no_sync()


def as_local(value: Any) -> torch.Tensor:
    """A DTensor (FSDP's grad norm) as a plain tensor holding the full value."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


# ---------------------------------------------------------------------------- state dicts
def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's integer-id order."""
    names = {id(p): n for n, p in unwrap(model).named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, d: Dist
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(model state dict or None = take it from the model, optimizer state dict), both complete
    and in the one-process layout, on rank 0; (None, None) elsewhere. A collective under FSDP."""
    if not (d.enabled and d.strategy == "fsdp"):
        return None, optimizer.state_dict() if d.is_main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
    if not d.is_main:
        return None, None
    order = _param_names(model, optimizer)
    index = {name: i for i, name in enumerate(order)}
    groups, start = [], 0
    for group, ours in zip(optim_sd["param_groups"], optimizer.param_groups, strict=True):
        n = len(ours["params"])
        groups.append({**group, "params": list(range(start, start + n))})
        start += n
    state = {index[name]: s for name, s in optim_sd["state"].items() if name in index}
    return model_sd, {"state": state, "param_groups": groups}


def load_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Path, d: Dist
) -> None:
    """Load a checkpoint's one-process-layout optimizer state (from any world size) into this
    run. Under FSDP only rank 0 reads the file and broadcasts each tensor to its shard owners."""
    from .checkpoint import load_optimizer_state as read_state

    if not (d.enabled and d.strategy == "fsdp"):
        optimizer.load_state_dict(read_state(checkpoint))
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    named: dict[str, Any] = {}
    if d.is_main:
        state = read_state(checkpoint)
        order = _param_names(model, optimizer)
        named = {
            "state": {order[int(i)]: s for i, s in state["state"].items()},
            "param_groups": [
                {**g, "params": [order[int(i)] for i in g["params"]]} for g in state["param_groups"]
            ],
        }
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_optimizer_state_dict(model, optimizer, named, options=options)


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
    cmd = [sys.executable, "-m", "replay_engine.distributed", "agent"]
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
        "replay_engine.distributed",
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
    from .hooks import NoHooks
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
    from .spec import JobSpec
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


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so a killed worker does not
    leave ranks training on. (torchrun's agent passes SIGTERM on to the ranks.)"""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the launcher's own teardown still terminates the ranks


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:  # torchrun itself, tied to the parent that launched it
        _die_with_parent()
        from torch.distributed.run import main as torchrun

        torchrun(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m replay_engine.distributed")
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
