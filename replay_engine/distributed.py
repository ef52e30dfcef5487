"""Multi-process training on PyTorch's own stack, inside each process: the process group, DDP and
FSDP2 wrapping, collectives and world-size-independent state dicts. Starting the processes
(torchrun) is `launcher.py`'s job.

Design
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
  answer is broadcast, so every rank stops after the same step and checkpoints together."""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from .spec import SpecError

if TYPE_CHECKING:
    pass


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
