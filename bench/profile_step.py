"""One training step of each engine under torch.profiler: where the time and the memory go.

Same setup as bench/engine_throughput.py (same model, data, batches and settings; it builds the
spec with that script's `build_spec` and runs each engine with its `run_ours` / `run_hf`), with
the profiler stepped at the end of every training step, so that it records exactly one whole step
(`--step`, default 3: after the first steps have allocated the optimizer state and warmed the
allocator). ReplayFT runs first, then Trainer, in this one process.

For each engine it prints
- the step's wall time under the profiler (profiling slows it: compare engines, not runs);
- the top tensor ops (aten::) by self CPU time, and by memory they allocated themselves
  (`Self CPU Mem` counts allocations, not what stays alive);
- the peak of live tensor memory within the step, by the profiler's categories (parameters,
  optimizer state, gradients, activations kept for backward, temporaries, ...): from
  `export_memory_timeline` (torch's memory profiler, CPU and CUDA), taken at the step's
  highest point. RSS also holds the allocator's slack, Python and the libraries, so this is the
  part of the peak that the step's own code decides.

Usage
    python bench/profile_step.py                      # llama-small, batch 8 x 256, step 3
    python bench/profile_step.py --model replayft/llama-tiny --rows 8

Prints markdown tables, then one JSON line (the last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine_throughput as bench  # noqa: E402  (the benchmark next to this file)

# export_memory_timeline's column order: torch.profiler._memory_profiler._CATEGORY_TO_INDEX + 1
CATEGORIES = [
    "parameter",
    "optimizer_state",
    "input",
    "temporary",
    "activation",
    "gradient",
    "autograd_detail",
    "uncategorised",  # e.g. what a custom autograd.Function saves (ReplayFT's loss: the logits)
]


def profile_engine(engine: str, spec: dict[str, Any], work: Path, args) -> dict[str, Any]:
    """Run `engine` for `args.step` steps with the profiler recording only the last one."""
    from torch.profiler import ProfilerActivity, profile, schedule

    device = bench.resolve_device(args.device)
    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    step_walls: list[float] = []
    marks = [time.perf_counter()]

    with profile(
        activities=activities,
        # record only the (step)-th step: the profiler steps at each step's end
        schedule=schedule(wait=max(0, args.step - 2), warmup=1, active=1, repeat=1),
        profile_memory=True,
        record_shapes=True,
        with_stack=True,  # the memory profiler needs it to categorise tensors
    ) as prof:

        def on_step_end() -> None:
            now = time.perf_counter()
            step_walls.append(now - marks[-1])
            marks.append(now)
            prof.step()

        if engine == "ours":
            bench.run_ours(spec, work, 1, device, on_step_end=on_step_end)
        else:
            bench.run_hf(spec, work, 1, device, None, on_step_end=on_step_end)

    # tensor ops only: with_stack also records Python frames (Trainer's threads waiting, say)
    averages = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    mem_device = "cuda:0" if device == "cuda" else "cpu"
    timeline_file = work / f"{engine}_memory.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated for CUDA snapshots only
        prof.export_memory_timeline(str(timeline_file), device=mem_device)
    _, sizes = json.loads(timeline_file.read_text())  # [times, sizes by category]
    totals = [sum(row[1:]) for row in sizes]
    at_peak = sizes[max(range(len(totals)), key=totals.__getitem__)][1:] if totals else []
    total_time_us = sum(e.self_cpu_time_total for e in averages)
    return {
        "engine": engine,
        "step_wall_s": step_walls[args.step - 1],
        "self_cpu_total_ms": total_time_us / 1000,
        "ops": {
            e.key: {
                "self_ms": e.self_cpu_time_total / 1000,
                "self_alloc_mib": e.self_cpu_memory_usage / 2**20,
                "calls": e.count,
            }
            for e in averages
        },
        "peak_live_mib": max(totals, default=0) / 2**20,
        "peak_live_by_category_mib": {
            name: size / 2**20 for name, size in zip(CATEGORIES, at_peak, strict=True) if size
        },
    }


NO_CALLS = {"self_ms": 0.0, "self_alloc_mib": 0.0, "calls": 0}


def print_report(results: dict[str, dict[str, Any]], rows: int) -> None:
    ours, hf = results["ours"], results["hf"]
    print("| | ReplayFT `train()` | HF Trainer |")
    print("|---|---:|---:|")
    print(
        f"| step wall time under the profiler (s) | {ours['step_wall_s']:.3f} "
        f"| {hf['step_wall_s']:.3f} |"
    )
    print(
        f"| self CPU time of all aten ops (ms) | {ours['self_cpu_total_ms']:.0f} "
        f"| {hf['self_cpu_total_ms']:.0f} |"
    )
    print(
        f"| peak live tensor memory in the step (MiB) | {ours['peak_live_mib']:.0f} "
        f"| {hf['peak_live_mib']:.0f} |"
    )
    for name in CATEGORIES:
        a = ours["peak_live_by_category_mib"].get(name, 0.0)
        b = hf["peak_live_by_category_mib"].get(name, 0.0)
        if a or b:
            print(f"| &nbsp;&nbsp;of which {name} at the peak | {a:.0f} | {b:.0f} |")
    for column, title, unit in (
        ("self_ms", "self CPU time", "ms"),
        ("self_alloc_mib", "memory allocated (Self CPU Mem)", "MiB"),
    ):
        print()
        print(f"top {rows} tensor ops by {title}, either engine")
        print(f"| op | ReplayFT {unit} | calls | HF {unit} | calls |")
        print("|---|---:|---:|---:|---:|")
        names = set(ours["ops"]) | set(hf["ops"])

        def largest(name: str, column: str = column) -> float:
            return max(r["ops"].get(name, NO_CALLS)[column] for r in (ours, hf))

        for name in sorted(names, key=largest, reverse=True)[:rows]:
            a, b = ours["ops"].get(name, NO_CALLS), hf["ops"].get(name, NO_CALLS)
            print(f"| `{name}` | {a[column]:.1f} | {a['calls']} | {b[column]:.1f} | {b['calls']} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="replayft/llama-small")
    p.add_argument("--step", type=int, default=3, help="the step to record (>= 2)")
    p.add_argument("--rows", type=int, default=12, help="ops per table")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--data-dir", type=Path, default=bench.DEFAULT_DATA)
    args = p.parse_args(argv)
    if args.step < 2:
        p.error("--step must be >= 2")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    info = bench.print_machine(bench.resolve_device(args.device))
    # the benchmark's own spec: same data, batches and optimizer settings, step+1 steps
    spec_args = bench.parse_args(
        [
            "--model", args.model, "--batch-size", str(args.batch_size),
            "--seq-len", str(args.seq_len), "--warmup", "1", "--steps", str(args.step),
            "--device", args.device, "--data-dir", str(args.data_dir),
        ]
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="replayft-profile-") as tmp:
        work = Path(tmp)
        spec = bench.build_spec(spec_args, work)
        results = {engine: profile_engine(engine, spec, work, args) for engine in ("ours", "hf")}
    print(
        f"\n{args.model}, batch {args.batch_size} x seq_len {args.seq_len}, step {args.step} "
        f"of {args.step + 1} profiled\n"
    )
    print_report(results, args.rows)
    print(json.dumps({"benchmark": "profile_step", "machine": info, "results": results}))


if __name__ == "__main__":
    main()
