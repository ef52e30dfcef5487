"""What per-document attention costs: ReplayFT's trainer with `packing_attention: document`
against `causal`, everything else equal.

The run is bench/engine_throughput.py's ReplayFT run (its `build_spec` and its `--engine ours`
child process): the first `--target-examples` GSM8K problems as prompt/completion target data,
the C4 sample as replay data at r = 0.25, exactly `warmup + steps` steps of batch x seq_len.
Only the spec's `packing_attention` differs. Runs alternate document, causal, causal, document,
... (`--repeats` of each), each in its own process; tokens/s is the median step after the
warmup; reported are the median run and the fastest one (the one other processes slowed least).
The CPU share that other processes took during each run is shown, since on a shared machine that
is most of the noise.

Before those runs, in this process, one real batch's forward + backward is timed with and
without the positions, alternating (`--reps` each): the cost of the mask alone, with the least
noise a shared machine allows (the minimum). Also counted: how many of the trained rows hold a
document boundary. Only those rows change: with `document`, transformers passes SDPA a boolean
block-diagonal mask when some row of the micro-batch has a boundary, and the plain causal
kernel otherwise.

Usage
    python bench/packing_attention.py                       # llama-small, 2 + 10 steps of 8 x 256
    python bench/packing_attention.py --repeats 3 --threads 2
    python bench/packing_attention.py --seq-len 1024 --batch-size 2

Prints a markdown table, then one JSON line (the last line of stdout) with every number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engine_throughput, beside this file
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # replay_engine

import engine_throughput as et  # noqa: E402

SETTINGS = ("document", "causal")


def boundary_rows(spec_dict: dict, warmup: int) -> dict[str, float]:
    """Share of the measured steps' rows that hold a document boundary, and documents per row."""
    import numpy as np

    from replay_engine.mixture import Mixture
    from replay_engine.spec import parse_spec
    from replay_engine.trainer import gather_batch, prepare

    data = prepare(parse_spec(spec_dict))
    mixture = Mixture(data.plan)
    starts = []
    for step in range(warmup, data.plan.total_steps):
        _, _, positions, _ = gather_batch(mixture, data, step)
        starts.append((np.diff(positions, axis=1) != 1).sum(axis=1))  # restarts inside each row
    starts = np.concatenate(starts)
    return {
        "rows_with_boundary": float((starts > 0).mean()),
        "documents_per_row": float(starts.mean() + 1),
    }


def forward_backward(spec_dict: dict, step: int, reps: int) -> dict[str, dict[str, float]]:
    """Forward + backward of the loss on one real batch, with and without the positions,
    alternating in one process (the order flips each round), so that a busy neighbour slows
    both alike; the minimum is the least disturbed time."""
    import torch

    from replay_engine.mixture import Mixture
    from replay_engine.models import load_model
    from replay_engine.spec import parse_spec
    from replay_engine.trainer import gather_batch, prepare, token_losses

    spec = parse_spec(spec_dict)
    data = prepare(spec)
    tokens, mask, positions, _ = gather_batch(Mixture(data.plan), data, step)
    ids, positions = torch.from_numpy(tokens), torch.from_numpy(positions)
    label_mask = torch.from_numpy(mask[:, 1:])
    model = load_model(spec.model, gguf_file=spec.gguf_file, seed=spec.seed)
    model.train()

    def run(position_ids) -> float:
        t0 = time.perf_counter()
        (token_losses(model, ids, position_ids) * label_mask).sum().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    run(positions), run(None)  # warm-up
    for i in range(reps):
        for setting in SETTINGS if i % 2 == 0 else tuple(reversed(SETTINGS)):
            times[setting].append(run(positions if setting == "document" else None))
    return {
        s: {"min_s": min(t), "median_s": statistics.median(t), "times_s": t}
        for s, t in times.items()
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="replayft/llama-small", help="preset, HF folder or .gguf")
    p.add_argument("--steps", type=int, default=10, help="measured steps")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the timing (>= 1)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=1, help="runs per setting, alternating")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--data-dir", type=Path, default=et.DEFAULT_DATA)
    p.add_argument(
        "--reps", type=int, default=10, help="in-process forward + backward timings per setting"
    )
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        p.error("--warmup, --steps and --repeats must be >= 1")
    # engine_throughput's own options, at their defaults, for the pieces borrowed from it
    full = et.parse_args([])
    for key, value in vars(args).items():
        setattr(full, key, value)

    device = et.resolve_device(args.device)
    info = et.print_machine(device)
    with tempfile.TemporaryDirectory(prefix="replayft-packing-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        base = et.build_spec(full, work)
        print(f"data prepared in {time.perf_counter() - t0:.1f}s; model {args.model}")
        rows = boundary_rows(base, args.warmup)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        kernel = forward_backward(base, args.warmup, args.reps)
        spec_files = {}
        for setting in SETTINGS:
            spec_files[setting] = work / f"spec-{setting}.json"
            spec_files[setting].write_text(json.dumps({**base, "packing_attention": setting}))
        order = []
        for r in range(args.repeats):
            order += list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
        runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        for setting in order:
            result = et.run_child("ours", spec_files[setting], full)
            runs[setting].append(result)
            print(
                f"  {setting:8s}: {result['tokens_per_s_median']:8.0f} tok/s (median step "
                f"{result['median_step_s']:.3f}s), peak RSS {result['peak_rss_train_mib']:.0f} "
                f"MiB, other processes {et.fmt(result['other_processes_cpu_share'], '.0%')} of "
                f"the CPU",
                flush=True,
            )

    def median(setting: str, key: str) -> float | None:
        return et.median_of(runs[setting], key)

    def best(setting: str) -> float:
        # the run that other processes slowed least: on a shared machine, the closer to the truth
        return max(r["tokens_per_s_median"] for r in runs[setting])

    B, L = args.batch_size, args.seq_len
    print()
    print(
        f"{args.model}, batch {B} x seq_len {L}, {args.warmup} warmup + {args.steps} measured "
        f"steps, {args.repeats} run(s) per setting, device {device}; "
        f"{rows['rows_with_boundary']:.0%} of rows hold a document boundary "
        f"({rows['documents_per_row']:.2f} documents per row)"
    )
    print()
    print(
        "| packing_attention | tokens/s (median step, median run) | tokens/s (fastest run) "
        "| peak RSS (MiB) | other processes' CPU share (per run) | first loss |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for setting in SETTINGS:
        shares = ", ".join(et.fmt(r["other_processes_cpu_share"], ".0%") for r in runs[setting])
        print(
            f"| {setting} | {median(setting, 'tokens_per_s_median'):.0f} "
            f"| {best(setting):.0f} | {median(setting, 'peak_rss_train_mib'):.0f} "
            f"| {shares} | {runs[setting][0]['first_loss']:.4f} |"
        )
    ratio = median("document", "tokens_per_s_median") / median("causal", "tokens_per_s_median")
    best_ratio = best("document") / best("causal")
    print()
    print(f"document / causal tokens/s: {ratio:.3f} (median runs), {best_ratio:.3f} (fastest runs)")
    print()
    print(f"forward + backward of one batch in one process, alternating, {args.reps} each:")
    for setting in SETTINGS:
        k = kernel[setting]
        print(f"  {setting:8s}: min {k['min_s']:.3f}s, median {k['median_s']:.3f}s")
    kernel_ratio = kernel["document"]["min_s"] / kernel["causal"]["min_s"]
    print(f"  document / causal time (min): {kernel_ratio:.3f}")
    summary = {
        "machine": info,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **rows,
        "runs": runs,
        "document_over_causal_tokens_per_s": ratio,
        "document_over_causal_tokens_per_s_fastest": best_ratio,
        "forward_backward": kernel,
        "document_over_causal_forward_backward_time_min": kernel_ratio,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
