"""Does generic replay help a tiny model fine-tuned on scarce target data? (CPU benchmark)

The experiment, end to end with the engine's Python API (`parse_spec`, `train`):

1. Pre-train `--model` (default replayft/llama-tiny) from scratch on generic English from
   ../shared/data: c4_sample, wikipedia_sample, state_union, ud_english_ewt train and
   wikitext2/valid.txt. Generic validation is held out from wikitext2/test.txt
   (`replay.validation_dataset`), so it is disjoint from everything trained on.
2. Fine-tune that checkpoint on a few hundred GSM8K training examples, converted to
   prompt/completion JSONL (prompt "Question: ...\\nAnswer:", completion " " + answer; loss on the
   completion only). Target validation is gsm8k/test.jsonl converted the same way.
   One run per replay fraction r (default 0, 0.1, 0.25, 0.5, 0.75) at a fixed number of target
   epochs, so replay adds steps: N = ceil(epochs x T / ((1 - r) B)), the paper's fine-tuning
   comparison. Replay data is the pre-training data. Same LR, LR schedule type, seed and fresh
   optimizer for every r.
3. Print one markdown row per r: steps, final val_loss_target / val_loss_generic, the best
   val_loss_target seen during the run, and the initial loss spike (height, duration) from the
   run summary, plus the r with the lowest final target loss.
   Control (skip with --no-control): since replay at fixed epochs also means more steps, one more
   r = 0 run gets as many steps as the best r by training epochs / (1 - r) epochs instead.
4. With `--reference`: no-replay fine-tunes on x in {1, 2, 4, 8} units of target data (unit =
   `--target-examples`, the first x units of GSM8K train; x = 1 is the r = 0 run), fitted with
   `replay_engine.efficiency` to turn each r's target loss into a data-efficiency multiplier.

Runs live in `--out/<name>-<spec hash>/`; a finished run is not trained again (the engine sees
its final checkpoint and returns), so an interrupted benchmark can be rerun with the same flags.
Tokenized data is cached in `--cache-dir`.

    python bench/replay_effect.py                    # the default configuration
    python bench/replay_effect.py --reference        # plus the data-efficiency multiplier
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # presets and local files only
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars from checkpoint saving in the log

import torch  # noqa: E402

from replay_engine.efficiency import efficiency_multiplier, fit_reference  # noqa: E402
from replay_engine.spec import parse_spec  # noqa: E402
from replay_engine.trainer import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
GENERIC_TRAIN = [
    "c4_sample/c4_demo.jsonl",
    "wikipedia_sample/wiki_demo.txt",
    "state_union/state_union.jsonl",
    "ud_english_ewt/en_ewt-ud-train.txt",
    "wikitext2/valid.txt",
]
GENERIC_VAL = ["wikitext2/test.txt"]


# ---------------------------------------------------------------------------- data
def write_gsm8k(src: Path, dst: Path, n: int | None, offset: int = 0) -> Path:
    """GSM8K {question, answer} -> prompt/completion JSONL; the first n records from `offset`."""
    lines = [line for line in src.read_text().splitlines() if line.strip()]
    lines = lines[offset:] if n is None else lines[offset : offset + n]
    if n is not None and len(lines) < n:
        raise SystemExit(f"{src} has only {len(lines) + offset} records; asked for {offset + n}")
    out = []
    for line in lines:
        row = json.loads(line)
        prompt = f"Question: {row['question']}\nAnswer:"
        out.append(json.dumps({"prompt": prompt, "completion": " " + row["answer"]}))
    text = "\n".join(out) + "\n"
    # Rewrite only on change, so the file (and the engine's content-addressed cache) is stable.
    if not dst.exists() or dst.read_text() != text:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text)
    return dst


# ---------------------------------------------------------------------------- runs
def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(name: str, spec_dict: dict[str, Any], out_root: Path, log) -> dict[str, Any]:
    """Train one spec in out_root/<name>-<hash> (or pick up the finished run) and summarise it."""
    key = hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode()).hexdigest()[:10]
    run_dir = out_root / f"{name}-{key}"
    spec = parse_spec(spec_dict)
    log(f"[{name}] training in {run_dir}")
    t0 = time.perf_counter()
    result = train(spec, run_dir)
    wall = time.perf_counter() - t0
    records = read_metrics(run_dir)
    evals = [r for r in records if r["type"] == "eval"]
    trains = [r for r in records if r["type"] == "train"]
    step_times = sorted(r["step_time"] for r in trains)
    summary = result.summary
    plan = json.loads((Path(result.final_checkpoint) / "meta.json").read_text())["plan"]
    info: dict[str, Any] = {
        "name": name,
        "run_dir": str(run_dir),
        "final_checkpoint": str(result.final_checkpoint),
        "steps": result.total_steps,
        "wall_s": wall,
        "median_step_s": step_times[len(step_times) // 2] if step_times else None,
        "target_sequences": plan["target_sequences"],
        "generic_sequences": plan["generic_sequences"],
        "target_epochs": plan["target_epochs"],
        "generic_epochs": plan["generic_epochs"],
        "target_per_batch": sum(r["target_sequences"] for r in trains) / max(1, len(trains)),
        "final_val_loss_target": summary["final_val_loss_target"],
        "final_val_loss_generic": summary["final_val_loss_generic"],
        "loss_spike": summary["loss_spike"],
        "evals": [
            {k: r.get(k) for k in ("step", "val_loss_target", "val_loss_generic")} for r in evals
        ],
    }
    target_evals = [e for e in evals if e.get("val_loss_target") is not None]
    if target_evals:
        best = min(target_evals, key=lambda e: e["val_loss_target"])
        info["best_val_loss_target"] = best["val_loss_target"]
        info["best_step"] = best["step"]
        info["start_val_loss_target"] = target_evals[0]["val_loss_target"]
    if evals:
        info["start_val_loss_generic"] = evals[0].get("val_loss_generic")
    log(
        f"[{name}] {result.total_steps} steps in {wall:.0f}s: "
        f"val_loss_target {fmt(info['final_val_loss_target'])}, "
        f"val_loss_generic {fmt(info['final_val_loss_generic'])}"
    )
    return info


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------- report
def markdown_table(
    pre: dict[str, Any], runs: list[dict[str, Any]], multipliers, control: dict[str, Any] | None
) -> str:
    head = [
        "r",
        "steps",
        "target/generic seqs per batch (mean)",
        "final val_loss_target",
        "best val_loss_target (step)",
        "final val_loss_generic",
        "spike height",
        "spike duration (steps)",
    ]
    if multipliers is not None:
        head.append("data-efficiency multiplier vs r=0")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    start_target = runs[0].get("start_val_loss_target")
    lines.append(
        "| before fine-tuning | 0 | - | "
        f"{fmt(start_target)} | - | {fmt(pre['final_val_loss_generic'])} | - | - |"
        + (" - |" if multipliers is not None else "")
    )
    for info in runs + ([control] if control else []):
        spike = info["loss_spike"] or {}
        per_batch = info["target_per_batch"]
        batch = info["batch_size"]
        duration = spike.get("duration")
        row = [
            info.get("label", f"{info['r']:g}"),
            str(info["steps"]),
            f"{per_batch:.3g}/{batch - per_batch:.3g}",
            fmt(info["final_val_loss_target"]),
            f"{fmt(info.get('best_val_loss_target'))} ({info.get('best_step')})",
            fmt(info["final_val_loss_generic"]),
            fmt(spike.get("height"), 3),
            "not recovered" if spike and duration is None else str(duration),
        ]
        if multipliers is not None:
            m = multipliers.get(info.get("label", info["r"]))
            row.append("n/a" if m is None else f"{m:.2f}x")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="replayft/llama-tiny", help="model preset or path")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared/data folder")
    p.add_argument("--out", type=Path, default=Path("/tmp/replayft-bench/replay_effect"))
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="tokenization cache (default OUT/token-cache)"
    )
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=1500,
        help="0: --model is pre-trained already; fine-tune it directly",
    )
    p.add_argument("--pretrain-lr", type=float, default=3e-3)
    p.add_argument("--target-examples", type=int, default=100, help="GSM8K train examples")
    p.add_argument("--epochs", type=float, default=12.0, help="passes over the target data")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning peak LR (same for all r)")
    p.add_argument(
        "--schedule", choices=["cosine", "wsd"], default="cosine", help="LR schedule type"
    )
    p.add_argument("--replay", default="0,0.1,0.25,0.5,0.75", help="replay fractions r")
    p.add_argument("--eval-sequences", type=int, default=128, help="held-out sequences per source")
    p.add_argument(
        "--reference",
        action="store_true",
        help="also run the no-replay reference curve and report data-efficiency multipliers",
    )
    p.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip the r = 0 run with as many steps as the best r (more epochs instead)",
    )
    p.add_argument("--reference-units", default="1,2,4,8", help="target amounts, in units")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", type=Path, default=None, help="write all results here as well")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rs = [float(x) for x in args.replay.split(",") if x.strip()]
    if 0.0 not in rs:
        rs.insert(0, 0.0)  # the baseline every other r is compared with
    units = sorted({int(x) for x in args.reference_units.split(",") if x.strip()})
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = args.cache_dir or out / "token-cache"
    data = args.data.resolve()
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    generic = [str(data / f) for f in GENERIC_TRAIN]
    generic_val = [str(data / f) for f in GENERIC_VAL]
    common = {
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "seed": args.seed,
        "eval_sequences": args.eval_sequences,
        "keep_checkpoints": 1,
        "device": args.device,
        "cache_dir": str(cache_dir),
    }

    # 1. pre-training on generic English
    pre_spec = {
        **common,
        "model": args.model,
        "replay": {"dataset": generic, "validation_dataset": generic_val},
        "total_steps": args.pretrain_steps,
        "learning_rate": args.pretrain_lr,
        "lr_scheduler": {"type": args.schedule, "warmup_ratio": 0.02},
    }
    if args.pretrain_steps > 0:
        pre = run("pretrain", pre_spec, out, log)
    else:  # --model is pre-trained already (SmolLM2, say): fine-tune it as it is
        pre = {"final_checkpoint": args.model, "final_val_loss_generic": None}
    start_generic = pre.get("start_val_loss_generic")
    log(
        f"pre-training: val_loss_generic {fmt(start_generic)} -> "
        f"{fmt(pre['final_val_loss_generic'])}"
    )

    # 2. fine-tuning with replay fraction r at fixed target epochs
    target_val = write_gsm8k(data / "gsm8k" / "test.jsonl", out / "gsm8k_test.jsonl", None)

    def finetune(name: str, target: Path, r: float, epochs: float) -> dict[str, Any]:
        spec = {
            **common,
            "model": pre["final_checkpoint"],
            "training_file": str(target),
            "validation_file": str(target_val),
            "replay": {"dataset": generic, "validation_dataset": generic_val, "fraction": r},
            "n_epochs": epochs,
            "learning_rate": args.lr,
            "lr_scheduler": {"type": args.schedule},  # warmup floor(1% of steps), decay to 0
        }
        info = run(name, spec, out, log)
        info["r"], info["batch_size"] = r, args.batch_size
        return info

    gsm_train = data / "gsm8k" / "train.jsonl"
    target = write_gsm8k(
        gsm_train, out / f"gsm8k_train_{args.target_examples}.jsonl", args.target_examples
    )
    runs = [finetune(f"ft-r{r:g}", target, r, args.epochs) for r in rs]
    if pre["final_val_loss_generic"] is None:  # no pre-training run: the base model's own loss
        pre["final_val_loss_generic"] = runs[0].get("start_val_loss_generic")
    finals = {info["r"]: info["final_val_loss_target"] for info in runs}
    best_r = min(finals, key=lambda r: finals[r])

    # Control: replay at fixed epochs also means more optimizer steps. Does r = 0 get the same
    # gain from the same number of steps (more epochs over the target data)?
    control = None
    if args.control and best_r > 0:
        epochs = args.epochs / (1 - best_r)
        control = finetune(f"ctl-r0-e{epochs:g}", target, 0.0, epochs)
        control["label"] = f"0, {epochs:g} epochs (steps of r={best_r:g})"

    # 3. optional: reference curve and data-efficiency multipliers
    reference = None
    multipliers = None
    if args.reference:
        base = next(info for info in runs if info["r"] == 0.0)
        xs, losses = [], []
        for x in units:
            if x == 1:
                info = base
            else:
                n = x * args.target_examples
                path = write_gsm8k(gsm_train, out / f"gsm8k_train_{n}.jsonl", n)
                info = finetune(f"ref-x{x}", path, 0.0, args.epochs)
            xs.append(float(x))
            losses.append(info["final_val_loss_target"])
        fit = fit_reference(xs, losses)
        multipliers = {
            info.get("label", info["r"]): efficiency_multiplier(
                fit, info["final_val_loss_target"], base["final_val_loss_target"]
            )
            for info in runs + ([control] if control else [])
        }
        reference = {"units": xs, "losses": losses, "fit": fit.__dict__}

    # 4. report
    wall = time.perf_counter() - started
    print()
    print(
        f"model {args.model}, pre-trained {args.pretrain_steps} steps at LR {args.pretrain_lr:g} "
        f"(val_loss_generic {fmt(start_generic)} -> {fmt(pre['final_val_loss_generic'])}); "
        f"fine-tuned on {args.target_examples} GSM8K examples "
        f"({runs[0]['target_sequences']} packed sequences of {args.seq_len} tokens), "
        f"{args.epochs:g} epochs, {args.schedule} LR {args.lr:g}, "
        f"batch {args.batch_size} x {args.seq_len}, seed {args.seed}"
    )
    print()
    print(markdown_table(pre, runs, multipliers, control))
    print()
    print(
        f"best r by final val_loss_target: {best_r:g} "
        f"({finals[best_r]:.4f} vs {finals[0.0]:.4f} at r=0, "
        f"difference {finals[0.0] - finals[best_r]:+.4f})"
    )
    if reference is not None:
        points = ", ".join(
            f"{x:g}:{loss:.4f}"
            for x, loss in zip(reference["units"], reference["losses"], strict=True)
        )
        fit = reference["fit"]
        print(
            f"reference (x units : final val_loss_target, no replay): {points}; "
            f"fit method {fit['method']} (A={fit['A']:.4g}, B={fit['B']:.4g}, C={fit['C']:.4g}, "
            f"beta={fit['beta']:.4g})"
        )
    print(
        f"total wall time {wall / 60:.1f} min on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    results = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "pretrain": pre,
        "finetune": runs,
        "best_r": best_r,
        "control": control,
        "reference": reference,
        "multipliers": multipliers,
        "wall_s": wall,
    }
    json_path = args.json or out / "results.json"
    json_path.write_text(json.dumps(results, indent=2, default=str))
    log(f"results written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
