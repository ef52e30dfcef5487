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

Metrics use the API's names (../shared/docs/api.md). `step` counts optimizer steps completed:
a train record with step s describes the s-th update, an eval record with step s the model after
s updates (step 0 is the model before training), and `checkpoints/step-s` holds that model.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .data import PackedDataset, prepare_dataset
from .hooks import NoHooks, TrainingHooks
from .mixture import TARGET, Mixture
from .models import load_model, load_tokenizer, model_info
from .schedule import Plan, resolve_plan
from .spec import JobSpec, SpecError


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN or infinite."""


@dataclass
class RunData:
    tokenizer: Any
    target: PackedDataset | None
    generic: PackedDataset | None
    plan: Plan


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


def prepare(spec: JobSpec) -> RunData:
    """Tokenize (or load from cache) the run's data and resolve its schedule. No model weights."""
    info = model_info(spec.model, spec.gguf_file)
    max_len = info.get("max_sequence_length")
    if max_len is not None and spec.seq_len > max_len:
        raise SpecError([("seq_len", f"{spec.seq_len} exceeds the model's maximum of {max_len}")])
    tokenizer = load_tokenizer(spec.model, spec.gguf_file)
    cache_dir = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()

    def packed(
        paths: list[str], val_paths: list[str], subset_fraction: float = 1.0
    ) -> PackedDataset | None:
        if not paths:
            return None
        return prepare_dataset(
            paths,
            tokenizer=tokenizer,
            seq_len=spec.seq_len,
            cache_dir=cache_dir,
            val_paths=val_paths,
            val_fraction=spec.val_fraction,
            seed=spec.seed,
            subset_fraction=subset_fraction,
        )

    target = packed(spec.training_file, spec.validation_file, spec.target_subset_fraction)
    generic = packed(spec.replay.dataset, spec.replay.validation_dataset)
    plan = resolve_plan(
        spec, len(target.train) if target else 0, len(generic.train) if generic else 0
    )
    return RunData(tokenizer, target, generic, plan)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError([("device", "cuda requested but no GPU is available")])
    return torch.device(name)


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
    mixture: Mixture, data: RunData, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, loss masks and an is-target flag for every slot of batch `step`."""
    slots = mixture.batch(step)
    is_target = np.array([s.source == TARGET for s in slots])
    L = data.plan.seq_len
    tokens = np.empty((len(slots), L), dtype=np.int64)
    mask = np.empty((len(slots), L), dtype=bool)
    for flag, dataset in ((True, data.target), (False, data.generic)):
        rows = np.flatnonzero(is_target == flag)
        if len(rows):
            index = np.array([slots[i].index for i in rows])
            tokens[rows] = dataset.train.tokens[index]
            mask[rows] = dataset.train.loss_mask[index]
    return tokens, mask, is_target


def token_losses(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token next-token cross-entropy, shape (batch, seq_len - 1), in fp32."""
    logits = model(input_ids=input_ids).logits
    # Shift the labels, not the logits: slicing the (B, L, V) logits would make reshape copy
    # them, and the slice's backward would fill another full-size gradient.
    labels = torch.roll(input_ids, shifts=-1, dims=1)
    loss = F.cross_entropy(
        logits.float().view(-1, logits.size(-1)), labels.view(-1), reduction="none"
    )
    return loss.view(input_ids.shape)[:, :-1]  # the last position has no next token


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, split, *, n_sequences: int, micro_batch: int, device, autocast
) -> float | None:
    """Token-weighted mean loss on the first `n_sequences` held-out sequences."""
    n = min(n_sequences, len(split))
    if n == 0:
        return None
    model.eval()
    total, count = 0.0, 0
    for start in range(0, n, micro_batch):
        ids = torch.from_numpy(
            np.asarray(split.tokens[start : start + micro_batch], dtype=np.int64)
        )
        mask = torch.from_numpy(
            np.asarray(split.loss_mask[start : start + micro_batch], dtype=bool)
        )
        ids, mask = ids.to(device), mask[:, 1:].to(device)
        with autocast():
            losses = token_losses(model, ids)
        total += float((losses * mask).sum())
        count += int(mask.sum())
    model.train()
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
_RESUME_IGNORED = {"device", "cache_dir", "checkpoint_interval", "keep_checkpoints"}


def _comparable(spec_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec_dict.items() if k not in _RESUME_IGNORED}


def train(
    spec: JobSpec,
    out_dir: str | Path,
    hooks: TrainingHooks | None = None,
    *,
    data: RunData | None = None,
) -> TrainResult:
    """Run (or resume) the spec's training in `out_dir`. See the module docstring."""
    hooks = hooks or NoHooks()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(spec.device)
    torch.manual_seed(spec.seed)

    # 1-2. tokenizer, data, plan
    data = data or prepare(spec)
    plan = data.plan
    mixture = Mixture(plan)
    N, B, L = plan.total_steps, plan.batch_size, plan.seq_len
    spec_json = spec.model_dump(mode="json")

    # 3. resume point
    ckpt.clean_partial(out_dir)
    resume = ckpt.latest_checkpoint(out_dir)
    meta: dict[str, Any] = {}
    if resume is not None:
        meta = ckpt.read_meta(resume)
        if _comparable(meta["spec"]) != _comparable(spec_json):
            raise SpecError(
                [("spec", f"{out_dir} holds a run of a different spec; use a new output folder")]
            )

    # 4. model
    if resume is not None:
        model = load_model(str(resume), device=device)
    else:
        model = load_model(spec.model, gguf_file=spec.gguf_file, seed=spec.seed, device=device)
    model.train()

    # 5. optimizer
    optimizer = build_optimizer(model, spec, device)
    if resume is not None:
        optimizer.load_state_dict(ckpt.load_optimizer_state(resume))
        ckpt.restore_rng(resume)
    elif spec.optimizer_state == "carry":
        if not ckpt.is_replayft_checkpoint(spec.model):
            raise SpecError(
                [
                    (
                        "optimizer_state",
                        f"carry needs a ReplayFT checkpoint as model; {spec.model} is not one",
                    )
                ]
            )
        optimizer.load_state_dict(ckpt.load_optimizer_state(spec.model))

    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    start = int(meta.get("step", 0))
    spike = SpikeTracker(**meta.get("spike", {}))
    last_eval: dict[str, Any] = meta.get("last_eval", {})
    eval_interval = spec.eval_interval or max(1, N // 20)
    checkpoint_interval = spec.checkpoint_interval or max(1, N // 10)
    micro = spec.micro_batch_size or B
    params = [p for p in model.parameters() if p.requires_grad]
    metrics = MetricsFile(out_dir / "metrics.jsonl", start)

    def emit(record: dict[str, Any]) -> None:
        metrics.write(record)
        hooks.on_metrics(record)

    def run_eval(step: int) -> None:
        nonlocal last_eval
        kwargs = dict(
            n_sequences=spec.eval_sequences, micro_batch=micro, device=device, autocast=autocast
        )
        record: dict[str, Any] = {
            "type": "eval",
            "step": step,
            "stage": plan.stage_at(min(step, N - 1)).index,
        }
        if data.target is not None:
            record["val_loss_target"] = evaluate(model, data.target.val, **kwargs)
        if data.generic is not None:
            record["val_loss_generic"] = evaluate(model, data.generic.val, **kwargs)
        last_eval = record
        emit(record)

    def save(step: int) -> Path:
        path = ckpt.save_checkpoint(
            out_dir,
            step,
            model=model,
            tokenizer=data.tokenizer,
            optimizer=optimizer,
            meta={
                "spec": spec_json,
                "plan": plan.summary(),
                "spike": asdict(spike),
                "last_eval": last_eval,
                "tokens_seen": step * B * L,
            },
        )
        ckpt.prune_checkpoints(out_dir, spec.keep_checkpoints, protect=path)
        hooks.on_checkpoint(path, step)
        return path

    stopped = False
    final_checkpoint = resume if start == N else None
    try:
        if start == 0:
            run_eval(0)
        for step in range(start, N):
            t0 = time.perf_counter()
            lr = plan.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            tokens, mask, is_target = gather_batch(mixture, data, step)
            ids = torch.from_numpy(tokens).to(device, non_blocking=True)
            label_mask = torch.from_numpy(mask[:, 1:]).to(device)
            target_rows = torch.from_numpy(is_target).to(device)
            n_label_tokens = max(1, int(mask[:, 1:].sum()))
            data_time = time.perf_counter() - t0

            # sums of per-token loss and token counts, by source: [target, generic]
            loss_sums = torch.zeros(2, device=device)
            token_counts = torch.zeros(2, device=device)
            for lo in range(0, B, micro):
                hi = lo + micro
                with autocast():
                    losses = token_losses(model, ids[lo:hi]) * label_mask[lo:hi]
                (losses.sum() / n_label_tokens).backward()
                per_row = losses.detach().sum(dim=1)
                rows_target = target_rows[lo:hi]
                counts = label_mask[lo:hi].sum(dim=1).float()
                loss_sums[0] += per_row[rows_target].sum()
                loss_sums[1] += per_row[~rows_target].sum()
                token_counts[0] += counts[rows_target].sum()
                token_counts[1] += counts[~rows_target].sum()
            clip = spec.grad_clip if spec.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            sums, counts = loss_sums.tolist(), token_counts.tolist()  # the one sync point per step
            grad_norm = float(grad_norm)
            train_loss = sum(sums) / max(1.0, sum(counts))
            if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                raise TrainingDiverged(
                    f"training diverged at step {step + 1}: loss {train_loss}, grad norm {grad_norm}; "
                    f"try a lower learning_rate"
                )
            loss_target = sums[0] / counts[0] if counts[0] else None
            loss_generic = sums[1] / counts[1] if counts[1] else None
            spike.update(step + 1, loss_target)
            step_time = time.perf_counter() - t0
            done = step + 1
            emit(
                {
                    "type": "train",
                    "step": done,
                    "stage": plan.stage_at(step).index,
                    "lr": lr,
                    "train_loss": train_loss,
                    "train_loss_target": loss_target,
                    "train_loss_generic": loss_generic,
                    "grad_norm": grad_norm,
                    "tokens_seen": done * B * L,
                    "tokens_per_second": B * L / step_time,
                    "target_sequences": int(is_target.sum()),
                    "generic_sequences": int((~is_target).sum()),
                    "data_time": data_time,
                    "step_time": step_time,
                }
            )
            if done % eval_interval == 0 or done == N:
                run_eval(done)
            if done % checkpoint_interval == 0 or done == N:
                path = save(done)
                if done == N:
                    final_checkpoint = path
            if done < N and hooks.should_stop(done):
                if done % checkpoint_interval:
                    save(done)
                stopped = True
                break
        summary = _summary(plan, spike, last_eval, stopped)
        if not stopped:
            emit(summary)
    finally:
        metrics.close()
    steps_completed = done if stopped else N
    return TrainResult(out_dir, steps_completed, N, stopped, final_checkpoint, summary)


def _summary(
    plan: Plan, spike: SpikeTracker, last_eval: dict[str, Any], stopped: bool
) -> dict[str, Any]:
    return {
        "type": "summary",
        "step": last_eval.get("step", 0) if stopped else plan.total_steps,
        "total_steps": plan.total_steps,
        "final_val_loss_target": last_eval.get("val_loss_target"),
        "final_val_loss_generic": last_eval.get("val_loss_generic"),
        "loss_spike": spike.report(),
    }
