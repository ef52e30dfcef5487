"""The training loop: a spec in, metrics and checkpoints out.

Setup order (each needs the one before):
  1. tokenizer     the data is tokenized with the model's own tokenizer
  2. data, plan    packed sequences per source; the plan needs their counts (schedule.resolve_plan)
  3. resume point  the newest complete checkpoint in OUT, if any
  4. model         from that checkpoint when resuming, else from the spec
  5. optimizer     after the model, whose parameters it holds; state restored, carried or fresh

Loop order per step (nanoGPT's): set LR, fetch the batch for this step from the mixture,
micro-batches (forward, token-weighted masked loss, backward), clip, optimizer step, zero grads,
then log, eval and checkpoint when due, then ask the hooks whether to stop.

The loss is the mean over the batch's trainable tokens (not the mean of micro-batch means), so
gradient accumulation does not change the result. `train_loss_target` and `train_loss_generic`
split the same per-token losses by source, so they cost nothing extra.

Metrics use the API's names (docs/api.md). `step` counts optimizer steps completed:
a train record with step s describes the s-th update, an eval record with step s the model after
s updates (step 0 is the model before training), and `checkpoints/step-s` holds that model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from . import distributed, evals, harness, lora
from .data import PackedDataset, prepare_dataset
from .flops import device_peak_flops, mfu, model_flops_per_token
from .hooks import NoHooks, TrainingHooks
from .loss import token_cross_entropy
from .mixture import TARGET, Mixture
from .models import build_on_meta, load_base, load_model, load_tokenizer, model_info
from .schedule import Plan, resolve_plan
from .spec import JobSpec, SpecError
from .streaming import prepare_sharded, should_stream


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN or infinite."""


@dataclass
class RunData:
    tokenizer: Any
    target: PackedDataset | None
    generic: PackedDataset | None
    plan: Plan
    eval_sets: list[tuple[Any, list]] = field(default_factory=list)  # (EvalSpec, records)


@dataclass
class TrainResult:
    out_dir: Path
    steps_completed: int
    total_steps: int
    stopped: bool  # True when the hooks asked to stop before the end
    final_checkpoint: Path | None
    summary: dict[str, Any]


# ---------------------------------------------------------------------------- setup
def default_cache_dir() -> Path:
    return Path(os.environ.get("REPLAYFT_CACHE_DIR", Path.home() / ".cache" / "replayft"))


def check_against_model(spec: JobSpec) -> None:
    """The spec's checks that need the model, from its config alone (never its weights):
    seq_len within the model's context, LoRA target modules that name layers it has. Raises
    SpecError naming the field; a model that cannot be found or read, ValueError or OSError."""
    max_len = model_info(spec.model, spec.gguf_file).get("max_sequence_length")
    if max_len is not None and spec.seq_len > max_len:
        raise SpecError([("seq_len", f"{spec.seq_len} exceeds the model's maximum of {max_len}")])
    targets = spec.method.lora.target_modules
    if spec.method.type != "full" and targets != "all-linear":
        lora.check_target_modules(build_on_meta(spec.model, gguf_file=spec.gguf_file), targets)


class DataProgress:
    """A `prepare` progress callback that tells a person (job events, the CLI's stderr) about
    data that takes a while to tokenize (a replay corpus of many GB): nothing in the first
    `every_s`, then each dataset's share at most every `every_s`, and a last message for a
    dataset that reported. Quick or cached data says nothing."""

    def __init__(
        self, emit: Callable[[str], None], every_s: float = 10.0, clock=time.monotonic
    ) -> None:
        self.emit, self.every_s, self.clock = emit, every_s, clock
        self.began = clock()
        self.last: dict[str, float] = {}  # when each dataset last reported

    def __call__(self, which: str, share: float) -> None:
        now = self.clock()
        if share >= 1.0:
            if self.last.pop(which, None) is not None:
                self.emit(f"Tokenized the {which} data.")
            return
        if now - self.last.get(which, self.began) >= self.every_s:
            self.last[which] = now
            self.emit(f"Tokenizing the {which} data: {share:.0%}.")


def prepare(spec: JobSpec, progress: Callable[[str, float], None] | None = None) -> RunData:
    """Tokenize (or load from cache) the run's data and resolve its schedule. No model weights.
    `progress("target" | "generic", share)` follows each dataset's tokenizing up to 1.0."""
    check_against_model(spec)
    tokenizer = load_tokenizer(spec.model, spec.gguf_file)
    cache_dir = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()

    def packed(
        which: str, paths: list[str], val_paths: list[str], subset_fraction: float = 1.0
    ) -> PackedDataset | None:
        if not paths:
            return None
        common = dict(
            progress=None if progress is None else lambda share: progress(which, share),
            tokenizer=tokenizer,
            seq_len=spec.seq_len,
            cache_dir=cache_dir,
            val_paths=val_paths,
            val_fraction=spec.val_fraction,
            seed=spec.seed,
        )
        # large sharded corpora: one background process per shard, flat memory (streaming.py);
        # a nested subset (a sweep's reference runs) needs all documents in one holdout first
        if subset_fraction == 1.0 and should_stream(paths):
            return prepare_sharded(paths, **common)
        return prepare_dataset(paths, subset_fraction=subset_fraction, **common)

    target = packed("target", spec.training_file, spec.validation_file, spec.target_subset_fraction)
    generic = packed("generic", spec.replay.dataset, spec.replay.validation_dataset)
    plan = resolve_plan(
        spec, len(target.train) if target else 0, len(generic.train) if generic else 0
    )
    return RunData(tokenizer, target, generic, plan, load_eval_sets(spec))


def load_eval_sets(spec: JobSpec) -> list[tuple[Any, list]]:
    """Each task eval of the spec with its records (read and checked now, so a bad eval file
    fails the run before any training; a file of the wrong kind names `evals[i].kind`)."""
    sets = []
    for i, config in enumerate(spec.evals):
        if config.kind == evals.LM_EVAL:  # the harness reads its own data; check the task exists
            try:
                harness.task_manager([config.task], harness.tasks_folder())
            except (ValueError, harness.HarnessMissing) as exc:
                raise SpecError([(f"evals[{i}].task", str(exc))]) from None
            sets.append((config, []))
            continue
        try:
            sets.append((config, evals.load_eval_set(config.file, config.kind, config.limit)))
        except evals.WrongKind as exc:
            raise SpecError([(f"evals[{i}].kind", str(exc))]) from None
    return sets


def build_optimizer(
    model: torch.nn.Module, spec: JobSpec, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on weight matrices only.

    Norm weights, embeddings (and a head tied to them) and biases are not decayed: shrinking them
    toward zero does not regularize, it just distorts scale and lookup tables.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, param in module.named_parameters(recurse=False):
            if is_norm or isinstance(module, torch.nn.Embedding) or name.endswith("bias"):
                no_decay.add(id(param))
    decay_params, other_params = [], []
    for param in model.parameters():  # parameters() yields tied weights once
        if param.requires_grad:
            (other_params if id(param) in no_decay else decay_params).append(param)
    groups = [
        {"params": decay_params, "weight_decay": spec.weight_decay},
        {"params": other_params, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=spec.learning_rate,
        betas=tuple(spec.adam_betas),
        eps=spec.adam_eps,
        fused=True,  # one kernel over all parameters, on CPU as well as CUDA
    )


# ---------------------------------------------------------------------------- batches and losses
def gather_batch(
    mixture: Mixture, data: RunData, step: int, slots: range | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, loss masks, positions within documents and an is-target flag for the given
    slots (default all) of batch `step`."""
    slots = mixture.batch(step, slots)
    is_target = np.array([s.source == TARGET for s in slots])
    L = data.plan.seq_len
    tokens = np.empty((len(slots), L), dtype=np.int64)
    mask = np.empty((len(slots), L), dtype=bool)
    positions = np.empty((len(slots), L), dtype=np.int64)
    for flag, dataset in ((True, data.target), (False, data.generic)):
        rows = np.flatnonzero(is_target == flag)
        if len(rows):
            index = np.array([slots[i].index for i in rows])
            tokens[rows] = dataset.train.tokens[index]
            mask[rows] = dataset.train.loss_mask[index]
            positions[rows] = dataset.train.positions[index]
    return tokens, mask, positions, is_target


def token_losses(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    label_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token next-token cross-entropy, shape (batch, seq_len - 1), in fp32.

    `position_ids` that restart at each document (the packer's `positions`) keep attention inside
    documents: given them and no attention mask, transformers builds a block-diagonal causal mask
    for SDPA (masking_utils.find_packed_sequence_indices; its flash-attention backends would need
    one flattened row). None: positions 0..L-1, attention across the whole row. No KV cache:
    with one, transformers skips the packed-sequence detection, and training has no use for it.

    `label_mask` (batch, seq_len - 1), bool, on the CPU: the tokens whose loss counts. Given it,
    the LM head and the loss run on those positions only and the other losses are 0: the same
    counted losses and the same gradients (the others' are exactly 0 either way) for less work.
    The head is a small model's largest matmul (vocabulary x hidden), and prompts and padding
    are a third of a prompt/completion batch. The indices are made on the CPU: no GPU sync."""
    batch, seq_len = input_ids.shape
    # Shift the labels, not the logits: slicing the (B, L, V) logits would make reshape copy
    # them, and the slice's backward would fill another full-size gradient.
    labels = torch.roll(input_ids, shifts=-1, dims=1).view(-1)
    if label_mask is None:
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        loss = token_cross_entropy(logits.view(-1, logits.size(-1)), labels)
        return loss.view(batch, seq_len)[:, :-1]  # the last position has no next token
    counted = torch.zeros(batch, seq_len, dtype=torch.bool)
    counted[:, :-1] = label_mask
    rows = counted.view(-1).nonzero().squeeze(1).to(input_ids.device, non_blocking=True)
    with _head_on_rows(model, rows):
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
    if logits.dim() > 2:  # a model that calls its head otherwise: select from the full logits
        logits = logits.flatten(0, -2).index_select(0, rows)
    loss = token_cross_entropy(logits, labels.index_select(0, rows))
    losses = loss.new_zeros(batch * seq_len).index_copy(0, rows, loss)
    return losses.view(batch, seq_len)[:, :-1]


@contextlib.contextmanager
def _head_on_rows(model: torch.nn.Module, rows: torch.Tensor):
    """Within: the model's LM head gets only `rows` of its input, flattened to (tokens, hidden),
    and so returns (len(rows), vocab) logits. A forward pre-hook on the head works inside every
    wrapper (DDP, FSDP2, peft) and keeps what a model does after its head (logit soft-capping)."""
    head = distributed.unwrap(model).get_output_embeddings()

    def select(_head: torch.nn.Module, args: tuple) -> tuple | None:
        if not args:  # called with keyword arguments only: leave it (token_losses selects after)
            return None
        return (args[0].flatten(0, -2).index_select(0, rows), *args[1:])

    handle = head.register_forward_pre_hook(select) if head is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    split,
    *,
    n_sequences: int,
    micro_batch: int,
    device,
    autocast,
    dist: distributed.Dist | None = None,
    per_document: bool = True,
) -> float | None:
    """Token-weighted mean loss on the first `n_sequences` held-out sequences, with attention
    kept inside documents when `per_document` (the spec's packing_attention: document).

    With several ranks each takes every W-th micro-batch and the sums are all-reduced. All ranks
    run the same number of forward passes (a rank out of work repeats one with weight 0),
    because an FSDP forward is a collective."""
    d = dist or distributed.Dist()
    n = min(n_sequences, len(split))
    if n == 0:
        return None
    model.eval()
    starts = list(range(0, n, micro_batch))
    mine = starts[d.rank :: d.world_size]
    rounds = math.ceil(len(starts) / d.world_size)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, token count
    for i in range(rounds):
        start, weight = (mine[i], 1.0) if i < len(mine) else (starts[0], 0.0)
        end = min(start + micro_batch, n)
        ids = torch.from_numpy(np.asarray(split.tokens[start:end], dtype=np.int64))
        mask = torch.from_numpy(np.asarray(split.loss_mask[start:end], dtype=bool))
        ids, mask = ids.to(device), mask[:, 1:]
        positions = None
        if per_document:
            positions = np.asarray(split.positions[start:end], dtype=np.int64)
            positions = torch.from_numpy(positions).to(device)
        with autocast():
            losses = token_losses(model, ids, positions, mask)
        totals[0] += losses.sum().double() * weight
        totals[1] += float(mask.sum()) * weight
    distributed.all_reduce_sum(totals, d)
    model.train()
    total, count = totals.tolist()
    return total / count if count else None


# ---------------------------------------------------------------------------- loss spike
@dataclass
class SpikeTracker:
    """The initial loss spike: how far the target loss rises above its starting value, and for
    how long. Measured on train_loss_target from the first step that holds target data; frozen
    once the loss is back at or below the start."""

    start_step: int | None = None
    initial_loss: float | None = None
    peak_loss: float | None = None
    peak_step: int | None = None
    recovered_step: int | None = None

    def update(self, step: int, loss: float | None) -> None:
        if loss is None or self.recovered_step is not None:
            return
        if self.initial_loss is None:
            self.start_step, self.initial_loss = step, loss
            self.peak_loss, self.peak_step = loss, step
            return
        if loss > self.peak_loss:
            self.peak_loss, self.peak_step = loss, step
        if loss <= self.initial_loss:
            self.recovered_step = step

    def report(self) -> dict[str, Any] | None:
        if self.initial_loss is None:
            return None
        return {
            "initial_loss": self.initial_loss,
            "peak_loss": self.peak_loss,
            "peak_step": self.peak_step,
            "height": self.peak_loss - self.initial_loss,
            "recovered_step": self.recovered_step,
            "duration": None
            if self.recovered_step is None
            else self.recovered_step - self.start_step,
        }


# ---------------------------------------------------------------------------- metrics file
class MetricsFile:
    """`OUT/metrics.jsonl`, one JSON object per line, flushed per record.

    On resume from step S, records after S (written by the killed run after its last checkpoint)
    are dropped, so the file reads as if the run had never been interrupted.
    """

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        kept = []
        if resume_step > 0 and path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if record.get("type") != "summary" and record.get("step", 0) <= resume_step:
                    kept.append(line)
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
        self._file = open(path, "a")  # noqa: SIM115 - closed by close()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------- the run
# Settings that change how (fast) a run computes, not what it computes: a run may resume with
# other values, e.g. on more GPUs.
_RESUME_IGNORED = {
    "device",
    "cache_dir",
    "checkpoint_interval",
    "keep_checkpoints",
    "distributed",
    "compile",
    "activation_checkpointing",
    "peak_flops",
}


def _comparable(spec_dict: dict[str, Any]) -> dict[str, Any]:
    # through JobSpec first, so a checkpoint written before a field existed gets its default
    try:
        spec_dict = JobSpec.model_validate(spec_dict).model_dump(mode="json")
    except ValueError:
        pass  # a field since removed: compared as written, so the specs differ
    return {k: v for k, v in spec_dict.items() if k not in _RESUME_IGNORED}


def train(
    spec: JobSpec,
    out_dir: str | Path,
    hooks: TrainingHooks | None = None,
    *,
    data: RunData | None = None,
) -> TrainResult:
    """Run (or resume) the spec's training in `out_dir`. See the module docstring.

    Under torchrun every rank calls this; rank 0 alone writes files and calls `hooks`."""
    d, device = distributed.setup(spec.device, spec.distributed.strategy)
    try:
        return _train(spec, Path(out_dir), hooks or NoHooks(), data, d, device)
    finally:
        distributed.teardown(d)


def _train(
    spec: JobSpec,
    out_dir: Path,
    hooks: TrainingHooks,
    data: RunData | None,
    d: distributed.Dist,
    device: torch.device,
) -> TrainResult:
    """The recipe: the setup steps of the module docstring, then the loop."""
    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        hooks = NoHooks()  # only rank 0 reports
    torch.manual_seed(spec.seed)

    data = data or _prepare_in_rank_order(spec, d)  # 1-2. tokenizer, data, plan
    plan = data.plan
    _check_batch_split(spec, d)
    resume, meta = _resume_point(spec, out_dir, d)  # 3. resume point
    model, raw_model, flops_per_token = _build_model(spec, resume, d, device, plan.seq_len)  # 4.
    optimizer = build_optimizer(raw_model, spec, device)  # 5. optimizer
    _restore_optimizer(optimizer, raw_model, spec, resume, d)

    start, N = int(meta.get("step", 0)), plan.total_steps
    run = _Run(
        spec=spec,
        plan=plan,
        data=data,
        mixture=Mixture(plan),
        d=d,
        device=device,
        model=model,
        raw_model=raw_model,
        optimizer=optimizer,
        hooks=hooks,
        metrics=MetricsFile(out_dir / "metrics.jsonl", start) if d.is_main else None,
        out_dir=out_dir,
        flops_per_token=flops_per_token,
        peak_flops=device_peak_flops(device, spec.peak_flops),
        spike=SpikeTracker(**meta.get("spike", {})),
        last_eval=meta.get("last_eval", {}),
        first_eval=meta.get("first_eval", {}),
        last_task_eval=meta.get("last_task_eval", {}),
        eval_sets=data.eval_sets if d.is_main else [],  # rank 0 scores them alone
    )
    eval_interval = spec.eval_interval or max(1, N // 20)
    checkpoint_interval = spec.checkpoint_interval or max(1, N // 10)

    stopped = False
    final_checkpoint = resume if start == N else None
    try:
        if start == 0:
            _run_eval(run, 0, tasks=True)
        for step in range(start, N):
            run.emit(_train_step(run, step))
            done = step + 1
            val_due = done % eval_interval == 0 or done == N
            # task evals score each checkpoint's model (the end is always a checkpoint)
            tasks_due = bool(spec.evals) and (done % checkpoint_interval == 0 or done == N)
            if val_due or tasks_due:
                _run_eval(run, done, val=val_due, tasks=tasks_due)
            if done % checkpoint_interval == 0 or done == N:
                path = _save(run, done)
                if done == N:
                    final_checkpoint = path
            if done < N and distributed.broadcast_flag(hooks.should_stop(done), d, device):
                if done % checkpoint_interval:
                    _save(run, done)
                stopped = True
                break
        summary = _summary(run, stopped)
        if not stopped:
            run.emit(summary)
    finally:
        if run.metrics is not None:
            run.metrics.close()
    steps_completed = done if stopped else N
    return TrainResult(out_dir, steps_completed, N, stopped, final_checkpoint, summary)


# ---------------------------------------------------------------------------- setup steps
def _prepare_in_rank_order(spec: JobSpec, d: distributed.Dist) -> RunData:
    """`prepare` on rank 0 first, so the other ranks find the token cache warm."""
    if not d.is_main:
        distributed.barrier(d)
    data = prepare(spec)
    if d.is_main:
        distributed.barrier(d)
    return data


def _check_batch_split(spec: JobSpec, d: distributed.Dist) -> None:
    # spec.check() tests the world the spec asks for; this is the one the run got (torchrun
    # started by hand with another process count, say)
    errors = spec.batch_split_errors(d.world_size)
    if errors:
        raise SpecError(errors)


def _resume_point(
    spec: JobSpec, out_dir: Path, d: distributed.Dist
) -> tuple[Path | None, dict[str, Any]]:
    """The newest complete checkpoint in `out_dir` and its meta.json (None, {} for a new run)."""
    if d.is_main:
        ckpt.clean_partial(out_dir)
    distributed.barrier(d)
    resume = ckpt.latest_checkpoint(out_dir)
    if resume is None:
        return None, {}
    meta = ckpt.read_meta(resume)
    if _comparable(meta["spec"]) != _comparable(spec.model_dump(mode="json")):
        raise SpecError(
            [("spec", f"{out_dir} holds a run of a different spec; use a new output folder")]
        )
    return resume, meta


def _load_weights(
    spec: JobSpec, resume: Path | None, d: distributed.Dist, device: torch.device
) -> torch.nn.Module:
    """The model to train, from the checkpoint when resuming, else from the spec. Under FSDP
    only rank 0 reads weights; the other ranks build the architecture empty on the meta
    device and receive their shards after wrapping (`distributed.fill_from_rank0`)."""
    fsdp = d.enabled and d.strategy == "fsdp"
    if spec.method.type != "full":
        if fsdp:
            raise SpecError([("distributed.strategy", "LoRA trains with ddp, not fsdp")])
        # the base always comes from the spec; on resume the adapter from the checkpoint
        return lora.build_model(spec, load_base(spec, device), resume)
    if fsdp and not d.is_main:
        source = (str(resume), None) if resume is not None else (spec.model, spec.gguf_file)
        return build_on_meta(source[0], gguf_file=source[1])
    if resume is not None:
        return load_model(str(resume), device=device)
    return load_model(spec.model, gguf_file=spec.gguf_file, seed=spec.seed, device=device)


def _apply_speed_options(model: torch.nn.Module, spec: JobSpec) -> None:
    """Activation checkpointing and torch.compile: how fast, never what is computed."""
    if spec.activation_checkpointing:
        # transformers 5.2x renamed gradient_checkpointing_enable; accept both names
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
    if spec.compile:
        for block in distributed.transformer_blocks(model) or [model]:
            block.compile()  # in place: parameter names (and so checkpoints) are unchanged


def _build_model(
    spec: JobSpec, resume: Path | None, d: distributed.Dist, device: torch.device, seq_len: int
) -> tuple[torch.nn.Module, torch.nn.Module, float]:
    """-> (the model the loop runs, wrapped for DDP/FSDP; the bare model that is saved and
    optimized; FLOPs per token). FSDP loads on CPU and shards onto `device` while wrapping."""
    fsdp = d.enabled and d.strategy == "fsdp"
    model = _load_weights(spec, resume, d, torch.device("cpu") if fsdp else device)
    _apply_speed_options(model, spec)
    model.train()
    flops_per_token = model_flops_per_token(model, seq_len)
    full_weights = model.state_dict() if fsdp and d.is_main else {}
    model = distributed.wrap_model(model, d, device)
    if fsdp:
        distributed.fill_from_rank0(model, full_weights, d, device)
        del full_weights
    return model, distributed.unwrap(model), flops_per_token


def _restore_optimizer(
    optimizer: torch.optim.Optimizer,
    raw_model: torch.nn.Module,
    spec: JobSpec,
    resume: Path | None,
    d: distributed.Dist,
) -> None:
    """Resume: the checkpoint's moments and RNG. `optimizer_state: carry`: the moments of the
    full fine-tuning checkpoint named as `model`. Otherwise the optimizer starts fresh."""
    if resume is not None:
        distributed.load_optimizer_state(raw_model, optimizer, resume, d)
        ckpt.restore_rng(resume)
        return
    if spec.optimizer_state != "carry":
        return
    if not ckpt.is_replayft_checkpoint(spec.model):
        raise SpecError(
            [
                (
                    "optimizer_state",
                    f"carry needs a ReplayFT checkpoint as model; {spec.model} is not one",
                )
            ]
        )
    if ckpt.read_meta(spec.model)["spec"].get("method", {}).get("type", "full") != "full":
        raise SpecError(
            [
                (
                    "optimizer_state",
                    f"carry needs a full fine-tuning checkpoint; {spec.model} was trained with "
                    f"LoRA, whose optimizer state covers only the adapter",
                )
            ]
        )
    distributed.load_optimizer_state(raw_model, optimizer, Path(spec.model), d)


# ---------------------------------------------------------------------------- the loop's steps
@dataclass
class _Run:
    """What the loop's steps share, built once by the setup steps."""

    spec: JobSpec
    plan: Plan
    data: RunData
    mixture: Mixture
    d: distributed.Dist
    device: torch.device
    model: torch.nn.Module  # what runs forward and backward (the DDP/FSDP wrapper, if any)
    raw_model: torch.nn.Module  # what is saved and optimized
    optimizer: torch.optim.Optimizer
    hooks: TrainingHooks
    metrics: MetricsFile | None  # rank 0 only
    out_dir: Path
    flops_per_token: float
    peak_flops: float | None
    spike: SpikeTracker
    last_eval: dict[str, Any]  # the newest record with validation losses
    first_eval: dict[str, Any]  # the step-0 record: the base model, for the summary
    last_task_eval: dict[str, Any]  # the newest task eval metrics, with their step
    eval_sets: list[tuple[Any, list]]  # (spec.EvalSpec, its records); rank 0 only

    def __post_init__(self) -> None:
        self.my_slots = range(self.d.rank, self.plan.batch_size, self.d.world_size)
        self.micro = self.spec.micro_batch_size or len(self.my_slots)
        self.per_document = self.spec.packing_attention == "document"
        self.use_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        # under DDP, eval runs on the bare model (no gradient hooks); FSDP needs its wrapper's
        # gathers
        self.eval_model = self.raw_model if self.d.strategy == "ddp" else self.model

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def emit(self, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write(record)
            self.hooks.on_metrics(record)


def _train_step(run: _Run, step: int) -> dict[str, Any]:
    """One optimizer step (the `step`-th, from 0); -> its train record."""
    plan, device, d = run.plan, run.device, run.d
    B, L, W = plan.batch_size, plan.seq_len, d.world_size
    t0 = time.perf_counter()
    lr = plan.lr_at(step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    tokens, mask, positions, is_target = gather_batch(run.mixture, run.data, step, run.my_slots)
    ids = torch.from_numpy(tokens).to(device, non_blocking=True)
    position_ids = torch.from_numpy(positions).to(device) if run.per_document else None
    label_mask = torch.from_numpy(mask[:, 1:])  # stays on the CPU: token_losses indexes with it
    # trainable tokens by source, [target, generic], in the GLOBAL batch; the loss is the mean
    # over all of them, and DDP/FSDP average gradients over the W ranks, so each rank scales
    # its share by W
    token_counts = torch.tensor(
        [mask[is_target, 1:].sum(), mask[~is_target, 1:].sum()], dtype=torch.float32
    ).to(device)
    distributed.all_reduce_sum(token_counts, d)
    loss_scale = W / token_counts.sum().clamp(min=1.0)
    # rows' sources as a [target, generic] x rows matrix: one matmul sums each micro-batch's row
    # losses by source (boolean indexing would wait for a GPU on every micro-batch)
    row_sources = torch.from_numpy(np.stack([is_target, ~is_target]).astype(np.float32))
    row_sources = row_sources.to(device)
    data_time = time.perf_counter() - t0

    loss_sums = torch.zeros(2, device=device)  # sums of per-token loss: [target, generic]
    local_B, micro = len(run.my_slots), run.micro
    for lo in range(0, local_B, micro):
        hi = lo + micro
        with distributed.grad_sync(run.model, d, sync=hi >= local_B):
            with run.autocast():
                row_positions = None if position_ids is None else position_ids[lo:hi]
                losses = token_losses(run.model, ids[lo:hi], row_positions, label_mask[lo:hi])
            (losses.sum() * loss_scale).backward()
        loss_sums += row_sources[:, lo:hi] @ losses.detach().sum(dim=1)
    clip = run.spec.grad_clip if run.spec.grad_clip > 0 else math.inf
    grad_norm = distributed.as_local(torch.nn.utils.clip_grad_norm_(run.trainable, clip))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)

    distributed.all_reduce_sum(loss_sums, d)
    totals = torch.cat([loss_sums, token_counts]).tolist()  # the one sync point per step
    sums, counts = totals[:2], totals[2:]
    grad_norm = float(grad_norm)
    train_loss = sum(sums) / max(1.0, sum(counts))
    if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
        raise TrainingDiverged(
            f"training diverged at step {step + 1}: loss {train_loss}, grad norm {grad_norm}; "
            f"try a lower learning_rate"
        )
    loss_target = sums[0] / counts[0] if counts[0] else None
    loss_generic = sums[1] / counts[1] if counts[1] else None
    run.spike.update(step + 1, loss_target)
    step_time = time.perf_counter() - t0
    done = step + 1
    tokens_per_second = B * L / step_time
    return {
        "type": "train",
        "step": done,
        "stage": plan.stage_at(step).index,
        "lr": lr,
        "train_loss": train_loss,
        "train_loss_target": loss_target,
        "train_loss_generic": loss_generic,
        "grad_norm": grad_norm,
        "tokens_seen": done * B * L,
        "tokens_per_second": tokens_per_second,
        "mfu": mfu(tokens_per_second, run.flops_per_token, run.peak_flops, W),
        "target_sequences": plan.target_count_at(step),
        "generic_sequences": B - plan.target_count_at(step),
        "data_time": data_time,
        "step_time": step_time,
    }


def _run_eval(run: _Run, step: int, *, val: bool = True, tasks: bool = False) -> None:
    """One eval record after `step` updates: validation loss per source on held-out sequences
    (`val`) and the spec's task evals (`tasks`, metrics eval/<name>/...)."""
    N = run.plan.total_steps
    record: dict[str, Any] = {
        "type": "eval",
        "step": step,
        "stage": run.plan.stage_at(min(step, N - 1)).index,
    }
    if val:
        kwargs = dict(
            n_sequences=run.spec.eval_sequences,
            micro_batch=run.micro,
            device=run.device,
            autocast=run.autocast,
            dist=run.d,
            per_document=run.per_document,
        )
        if run.data.target is not None:
            record["val_loss_target"] = evaluate(run.eval_model, run.data.target.val, **kwargs)
        if run.data.generic is not None:
            record["val_loss_generic"] = evaluate(run.eval_model, run.data.generic.val, **kwargs)
    if tasks and run.spec.evals:
        scores = _run_task_evals(run)
        record.update(scores)
        run.last_task_eval = {"step": step, **scores}
    if val:
        run.last_eval = record
    if step == 0:
        run.first_eval = record
    run.emit(record)


def _run_task_evals(run: _Run) -> dict[str, Any]:
    """The spec's task evals on the current model, scored by rank 0 alone on the bare model
    (the spec refuses evals under FSDP, whose forward needs every rank); the other ranks wait.
    Greedy decoding and log-likelihoods use no random numbers, so training is unchanged."""
    scores: dict[str, Any] = {}
    if run.d.is_main:
        model = run.raw_model
        model.eval()
        try:
            with run.autocast():
                for config, records in run.eval_sets:
                    result = evals.run_eval(config, records, model, run.data.tokenizer, run.device)
                    scores.update(result.metrics(config.name))
        finally:
            model.train()
    distributed.barrier(run.d)
    return scores


def _save(run: _Run, step: int) -> Path:
    """checkpoints/step-`step` (every rank takes part in gathering the state; rank 0 writes)."""
    spec, plan = run.spec, run.plan
    model_state, optimizer_state = distributed.full_state(run.model, run.optimizer, run.d)
    path = ckpt.checkpoints_root(run.out_dir) / f"step-{step}"
    if run.d.is_main:
        path = ckpt.save_checkpoint(
            run.out_dir,
            step,
            model=run.raw_model,
            tokenizer=run.data.tokenizer,
            optimizer=run.optimizer,
            optimizer_state=optimizer_state,
            model_state=model_state,
            write_model=None
            if spec.method.type == "full"
            else lambda folder: lora.write_checkpoint_weights(run.raw_model, folder, spec),
            meta={
                "spec": spec.model_dump(mode="json"),
                "plan": plan.summary(),
                "spike": asdict(run.spike),
                "last_eval": run.last_eval,
                "first_eval": run.first_eval,
                "last_task_eval": run.last_task_eval,
                "tokens_seen": step * plan.batch_size * plan.seq_len,
                "world_size": run.d.world_size,
            },
        )
        ckpt.prune_checkpoints(run.out_dir, spec.keep_checkpoints, protect=path)
        run.hooks.on_checkpoint(path, step)
    distributed.barrier(run.d)  # the folder is complete before any rank goes on (or resumes)
    return path


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _summary(run: _Run, stopped: bool) -> dict[str, Any]:
    """The end-of-run record: final losses, what training gained on the target and changed on
    generic data against the base model (step 0), each task eval before and after, the spike."""
    plan, first, last = run.plan, run.first_eval, run.last_eval
    initial_target, final_target = first.get("val_loss_target"), last.get("val_loss_target")
    initial_generic, final_generic = first.get("val_loss_generic"), last.get("val_loss_generic")
    return {
        "type": "summary",
        "step": last.get("step", 0) if stopped else plan.total_steps,
        "total_steps": plan.total_steps,
        "final_val_loss_target": final_target,
        "final_val_loss_generic": final_generic,
        "initial_val_loss_target": initial_target,
        "initial_val_loss_generic": initial_generic,
        # positive: the target loss fell (learned); positive generic change: forgetting
        "target_gain": _difference(initial_target, final_target),
        "generic_change": _difference(final_generic, initial_generic),
        "evals": _eval_summary(run.spec.evals, first, run.last_task_eval),
        "loss_spike": run.spike.report(),
    }


def _eval_summary(
    configs: list[Any], first: dict[str, Any], last: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per task eval: accuracy (and accuracy_norm) at step 0 and at its last run, the change."""
    out: dict[str, dict[str, Any]] = {}
    for config in configs:
        entry: dict[str, Any] = {"kind": config.kind, "generic": config.generic}
        for metric in ("accuracy", "accuracy_norm"):
            key = f"eval/{config.name}/{metric}"
            if key not in first and key not in last:
                continue
            before, after = first.get(key), last.get(key)
            entry[f"initial_{metric}"] = before
            entry[f"final_{metric}"] = after
            entry[f"{metric}_change"] = _difference(after, before)
        entry["total"] = last.get(
            f"eval/{config.name}/total", first.get(f"eval/{config.name}/total")
        )
        entry["step"] = last.get("step")
        out[config.name] = entry
    return out
