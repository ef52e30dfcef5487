"""`replayft` command line: train, plan, eval, efficiency and a self-contained demo.

Engine commands only; the service adds its own (serve, worker, jobs ...) through
`add_engine_commands`, so this module never imports the web stack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .data import DataFormatError
from .spec import SpecError, load_spec


# ---------------------------------------------------------------------------- train
class ProgressHooks:
    """A tqdm bar over steps, with the latest losses in its postfix."""

    def __init__(self, total: int, initial: int):
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr
        )

    def on_metrics(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "train":
            self.bar.update(record["step"] - self.bar.n)
            shown = {"loss": record["train_loss"], "lr": record["lr"], "stage": record["stage"]}
            if record.get("train_loss_target") is not None:
                shown["target"] = record["train_loss_target"]
            self.bar.set_postfix(
                {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in shown.items()}
            )
        elif kind == "eval":
            vals = {
                k: v
                for k, v in record.items()
                if (k.startswith("val_loss") or k.endswith(("/accuracy", "/accuracy_norm")))
                and v is not None
            }
            line = f"step {record['step']}: " + ", ".join(f"{k} {v:.4f}" for k, v in vals.items())
            self.bar.write(line, file=sys.stderr)

    def on_checkpoint(self, path: Path, step: int) -> None:
        self.bar.write(f"checkpoint: {path}", file=sys.stderr)

    def should_stop(self, step: int) -> bool:
        return False

    def close(self) -> None:
        self.bar.close()


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from . import checkpoint
    from .trainer import DataProgress, prepare, train

    spec = load_spec(args.spec, args.set)
    rendezvous = None
    if spec.distributed.nodes > 1:
        from .launcher import Rendezvous, join

        if not args.master or not 0 <= args.node_rank < spec.distributed.nodes:
            print(
                f"error: distributed.nodes is {spec.distributed.nodes}: run this command on every "
                "machine with --node-rank K (0 on the first) and --master HOST:PORT of node 0",
                file=sys.stderr,
            )
            return 2
        timeout = args.rendezvous_timeout or spec.distributed.rendezvous_timeout or 600.0
        rendezvous = Rendezvous(args.node_rank, args.master, timeout)
        if args.node_rank > 0:  # node 0 prepares the data and reports; we only train
            return join(spec, args.out, rendezvous)
    data = prepare(spec, DataProgress(_say))
    resume = checkpoint.latest_checkpoint(args.out)
    start = int(checkpoint.read_meta(resume)["step"]) if resume else 0
    if resume:
        print(f"resuming from {resume}", file=sys.stderr)
    hooks = ProgressHooks(data.plan.total_steps, start)
    try:
        if spec.distributed.world_size > 1 and "WORLD_SIZE" not in os.environ:
            from .launcher import launch  # starts torchrun with one process per GPU

            result = launch(spec, args.out, hooks, rendezvous=rendezvous)
        else:
            result = train(spec, args.out, hooks, data=data)
    finally:
        hooks.close()
    print(json.dumps(result.summary, indent=2))
    if result.final_checkpoint:
        print(f"final checkpoint: {result.final_checkpoint}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- plan
def format_plan(summary: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = [
        f"mode            {summary['mode']}",
        f"total steps     {summary['total_steps']}  (batch {summary['batch_size']} x seq_len {summary['seq_len']})",
        f"replay r        {fmt(summary['replay_fraction'])}   a {fmt(summary['target_stage2_allocation'])}"
        f"   d {fmt(summary['stage2_duration'])}   g {fmt(summary['target_fraction'])}",
        f"target          {summary['target_sequences']} sequences, {fmt(summary['target_epochs'])} epochs, "
        f"{summary['target_tokens']:,} tokens",
        f"generic         {summary['generic_sequences']} sequences, {fmt(summary['generic_epochs'])} epochs, "
        f"{summary['generic_tokens']:,} tokens",
        f"lr              {summary['lr_scheduler']['type']}, peak {fmt(summary['peak_lr'])}, "
        f"warmup {summary['warmup_steps']} steps",
        "",
        f"{'stage':>5} {'steps':>15} {'target w':>9} {'generic w':>9} {'target tok':>12} {'generic tok':>12}"
        f" {'lr start':>10} {'lr end':>10}",
    ]
    for s in summary["stages"]:
        span = f"{s['start_step']}-{s['end_step'] - 1}"
        lines.append(
            f"{s['stage']:>5} {span:>15} {s['target_weight']:>9.4f} {s['generic_weight']:>9.4f}"
            f" {s['target_tokens']:>12,} {s['generic_tokens']:>12,} {s['lr_at_start']:>10.3g} {s['lr_at_end']:>10.3g}"
        )
    lines += [f"warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    from .trainer import DataProgress, prepare

    summary = prepare(load_spec(args.spec, args.set), DataProgress(_say)).plan.summary()
    print(json.dumps(summary, indent=2) if args.json else format_plan(summary))
    return 0


# ---------------------------------------------------------------------------- efficiency
def cmd_efficiency(args: argparse.Namespace) -> int:
    from .efficiency import efficiency_multiplier, fit_reference, parse_reference

    xs, losses = parse_reference(args.reference)
    fit = fit_reference(xs, losses)
    multiplier = efficiency_multiplier(fit, args.candidate, args.baseline)
    method = fit.method_for(args.candidate, args.baseline)
    if args.json:
        print(
            json.dumps(
                {
                    "multiplier": multiplier,
                    "method": method,
                    "A": fit.A,
                    "B": fit.B,
                    "C": fit.C,
                    "alpha": fit.alpha,
                    "beta": fit.beta,
                }
            )
        )
    else:
        print(f"{multiplier:.2f}x  (fit: {method})")
    return 0


# ---------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo

    spec_path = write_demo(Path(args.out), steps_scale=args.scale, overrides=args.set)
    print(f"demo spec: {spec_path}", file=sys.stderr)
    plan_args = argparse.Namespace(spec=spec_path, json=False, set=[])
    cmd_plan(plan_args)
    return cmd_train(argparse.Namespace(spec=spec_path, out=Path(args.out) / "run", set=[]))


# ---------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from .harness import HarnessMissing, run_harness

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        result = run_harness(
            args.model,
            tasks,
            include_path=args.include_path,
            gguf_file=args.gguf_file,
            device=args.device,
            batch_size=args.batch_size,
            limit=args.limit,
            num_fewshot=args.num_fewshot,
            seed=args.seed,
        )
    except (HarnessMissing, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {"model": result.model, "results": result.tasks, "samples": result.samples}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("| task | metric | value | samples |")
    print("|---|---|---:|---:|")
    for name, value in sorted(result.metrics().items()):
        _, task, metric = name.split("/", 2)
        print(f"| {task} | {metric} | {value:.4f} | {result.samples.get(task, '')} |")
    return 0


# ---------------------------------------------------------------------------- wiring
def set_option(parser: argparse.ArgumentParser) -> None:
    """`--set FIELD=VALUE`, repeatable: spec settings on top of the file (spec.apply_overrides)."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field (dotted for nested ones: replay.fraction=0.1; VALUE is YAML); "
        "repeatable. A short trial run: --set n_epochs=0.05",
    )


def add_engine_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train from a YAML spec; reruns resume from the newest checkpoint"
    )
    p.add_argument("spec", help="job spec (YAML)")
    p.add_argument(
        "--out", required=True, type=Path, help="output folder (metrics.jsonl, checkpoints/)"
    )
    p.add_argument(
        "--node-rank",
        type=int,
        default=0,
        help="multi-machine specs (distributed.nodes > 1): this machine's place, 0..nodes-1; "
        "node 0 reports progress, the others only train",
    )
    p.add_argument("--master", help="multi-machine specs: node 0's host:port, the same everywhere")
    set_option(p)
    p.add_argument(
        "--rendezvous-timeout",
        type=float,
        default=None,
        help="seconds to wait for every machine to arrive (default: the spec's "
        "distributed.rendezvous_timeout, else 600)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plan", help="print the resolved schedule without training")
    p.add_argument("spec", help="job spec (YAML)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    set_option(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("efficiency", help="data-efficiency multiplier from a reference curve")
    p.add_argument(
        "--reference", required=True, help="X:LOSS,X:LOSS,... final target losses without replay"
    )
    p.add_argument(
        "--candidate", required=True, type=float, help="final target loss of the schedule"
    )
    p.add_argument(
        "--baseline", required=True, type=float, help="final target loss of the baseline"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_efficiency)

    p = sub.add_parser(
        "eval", help="score a model or checkpoint on lm-eval tasks (EleutherAI's harness)"
    )
    p.add_argument("model", help="preset, Hugging Face folder, ReplayFT checkpoint or .gguf file")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument(
        "--include-path", type=Path, help="folder of your own task YAML files (local data)"
    )
    p.add_argument("--gguf-file", help="GGUF file name inside MODEL (a folder)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="first N examples of each task")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples (default: the task's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the results here as JSON")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="two-stage replay run on data every Python install has")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the demo's data size")
    set_option(p)  # written into the demo's spec.yaml, so a rerun of it trains the same run
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replayft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_engine_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "plan", "demo"):
        # our own progress bar is enough; transformers would add one per save and load
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return args.func(args)
    except SpecError as exc:
        for param, message in exc.errors:
            print(f"error: {param}: {message}", file=sys.stderr)
        return 2
    except (DataFormatError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        from .trainer import TrainingDiverged

        if isinstance(exc, TrainingDiverged):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
