"""`replayft sweeps ...`: submit a replay sweep from YAML and read its data-efficiency report.

  replayft sweeps submit SPEC.yaml [--wait] [--timeout SECONDS]
  replayft sweeps show ID [--json]
  replayft sweeps cancel ID

A sweep file is an engine spec (the file `replayft train` and `replayft jobs submit` take) plus a
`sweep:` section with the lists to span:

    model: replayft/llama-tiny
    training_file: gsm8k.jsonl
    replay: {dataset: c4.jsonl}          # no fraction here: the sweep sets it per member
    n_epochs: 4
    sweep:
      replay_fractions: [0, 0.1, 0.25, 0.5, 0.75]   # the defaults when left out
      reference_subsets: [0.0625, 0.125, 0.25, 0.5, 1]
      target_stage2_allocations: [1, 0.5]           # mid-training only (needs total_steps)

Local data files are uploaded as `jobs submit` does (same mapping, same errors, uploads removed
again if the server rejects the sweep). `--wait` polls until every member job has finished and
then prints the report; `show` prints the sweep's members and its report as tables (`--json`: the
raw objects). Exit status as for `jobs`: 0 done, 1 the server or a member failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.http import CLIError, client_from_args
from client.options import command, server_options, timeout_option
from client.output import err, num, out, table
from client.submit import POLL_S, build_submission, deadline_after, expired, submit
from control.statuses import TERMINAL_STATUSES

SWEEPS = "/sweeps"
SWEEP_KEYS = ("replay_fractions", "target_stage2_allocations", "reference_subsets")
SWEEP_SET_FIELDS = ("replay.fraction", "replay.target_stage2_allocation", "target_subset_fraction")


def load_sweep_file(path: Path, overrides: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
    """-> (the checked engine spec, the `sweep:` section), `overrides` (FIELD=VALUE, `sweep.*`
    included) applied. CLIError(2) naming every problem."""
    from replay_engine.spec import SpecError, apply_overrides, parse_spec, read_spec_yaml

    try:
        data = apply_overrides(read_spec_yaml(path), overrides)
    except SpecError as exc:
        raise CLIError("\n".join(f"{p}: {m}" for p, m in exc.errors), 2) from None
    if not isinstance(data, dict):
        raise CLIError(f"{path}: must be a mapping of field names to values", 2)
    sweep = data.pop("sweep", None) or {}
    errors = []
    if not isinstance(sweep, dict):
        errors.append("sweep: must be a mapping (replay_fractions, reference_subsets, ...)")
        sweep = {}
    errors += [
        f"sweep.{key}: unknown; expected one of {', '.join(SWEEP_KEYS)}"
        for key in sweep
        if key not in SWEEP_KEYS
    ]
    replay = data.get("replay") if isinstance(data.get("replay"), dict) else {}
    for name in SWEEP_SET_FIELDS:
        head, _, tail = name.partition(".")
        if (tail and tail in replay) or (not tail and head in data):
            errors.append(f"{name}: set by the sweep for each member; remove it from the spec")
    if replay.get("stage2_duration") is not None:
        errors.append(
            "replay.stage2_duration: follows from r and a in a sweep; give total_steps instead"
        )
    if errors:
        raise CLIError("\n".join(errors), 2)
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        raise CLIError("\n".join(f"{p}: {m}" for p, m in exc.errors), 2) from None
    return spec, sweep


def cmd_sweeps_submit(args: argparse.Namespace) -> int:
    path = Path(args.spec)
    if not path.is_file():
        raise CLIError(f"{path}: no such file", 2)
    spec, sweep = load_sweep_file(path, args.set)
    submission = build_submission(spec, suffix=args.suffix)
    for note in submission.notes:
        err(f"note: {note}")
    deadline = deadline_after(args.timeout)

    def sweep_body(body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, **sweep}
        if "replay" in body:  # the sweep sets the fractions; the spec gives only the data
            data = ("dataset", "validation_dataset")
            body["replay"] = {k: v for k, v in body["replay"].items() if k in data}
        return body

    with client_from_args(args) as client, tempfile.TemporaryDirectory(prefix="replayft-") as tmp:
        created = submit(client, submission, SWEEPS, Path(tmp), deadline, shape=sweep_body)
        out(f"{created['id']} {created['status']} ({len(created['members'])} jobs)")
        if not args.wait:
            return 0
        try:
            final = wait_sweep(client, created["id"], deadline)
        except KeyboardInterrupt:
            err(f"stopped waiting; sweep {created['id']} carries on")
            return 130
        report = client.get(f"{SWEEPS}/{created['id']}/report")
    out(format_report(report))
    if final["status"] != "succeeded":
        raise CLIError(f"sweep {created['id']} {final['status']}: {final['counts']}", 1)
    return 0


def wait_sweep(client: Any, sweep_id: str, deadline: float | None = None) -> dict[str, Any]:
    """Poll until every member has finished, reporting the counts when they change."""
    last = None
    while True:
        sweep = client.get(f"{SWEEPS}/{sweep_id}")
        counts = sweep["counts"]
        line = (
            f"{sweep_id}: {sweep['status']}, {counts['succeeded']}/{counts['total']} jobs "
            f"succeeded, {counts['failed']} failed, {counts['unfinished']} unfinished"
        )
        if line != last:
            err(line)
            last = line
        if sweep["status"] in TERMINAL_STATUSES:
            return sweep
        if expired(deadline):
            raise CLIError(
                f"timed out waiting for sweep {sweep_id} ({counts}); it carries on: "
                f"`replayft sweeps show {sweep_id}`",
                1,
            )
        time.sleep(POLL_S * 2)


def format_members(sweep: dict[str, Any]) -> str:
    rows = []
    for m in sweep["members"]:
        progress = m.get("progress") or {}
        rows.append(
            [
                m["job_id"],
                m["status"],
                "+".join(m["roles"]),
                f"{m['replay_fraction']:g}",
                "-"
                if m["target_stage2_allocation"] is None
                else f"{m['target_stage2_allocation']:g}",
                f"{m['target_subset_fraction']:g}",
                f"{progress.get('step', 0)}/{progress.get('total_steps') or '?'}",
            ]
        )
    header = ["JOB", "STATUS", "ROLE", "R", "A", "SUBSET", "STEP"]
    return f"{sweep['id']} {sweep['status']}\n" + table(rows, header)


def format_report(report: dict[str, Any]) -> str:
    lines = [f"report: {report['status']} ({report['sweep_status']})"]
    reference = report["reference"]
    fit = reference.get("fit")
    if fit:
        params = (
            f"A={num(fit['A'])} B={num(fit['B'])} C={num(fit['C'])}"
            if fit["method"] == "power"
            else f"alpha={num(fit['alpha'])} beta={num(fit['beta'])} (power law degenerated)"
        )
        lines.append(f"reference fit: {fit['formula']}: {params}")
    else:
        lines.append(f"reference fit: none ({reference.get('fit_error')})")
    rows = [
        [f"{p['x']:.4g}", num(p["final_val_loss_target"]), p["status"], p["job_id"]]
        for p in reference["points"]
    ]
    lines.append(table(rows, ["X", "VAL_TARGET", "STATUS", "JOB"]))
    rows = []
    for c in report["configurations"]:
        alloc = c["target_stage2_allocation"]
        rows.append(
            [
                f"{c['replay_fraction']:g}" + (" (baseline)" if c["is_baseline"] else ""),
                "-" if alloc is None else f"{alloc:g}",
                c["status"],
                num(c["final_val_loss_target"]),
                num(c["final_val_loss_generic"]),
                num(c["loss_spike_height"]),
                "-" if c["multiplier"] is None else f"{c['multiplier']:.2f}x",
                c["job_id"],
            ]
        )
    header = ["R", "A", "STATUS", "VAL_TARGET", "VAL_GENERIC", "SPIKE", "MULTIPLIER", "JOB"]
    lines += ["", table(rows, header)]
    rec = report.get("recommendation")
    lines.append("")
    lines.append(f"recommended: {rec['reason']}" if rec else "recommended: nothing finished yet")
    lines += [f"note: {n}" for n in report.get("notes") or []]
    return "\n".join(lines)


def cmd_sweeps_show(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        sweep = client.get(f"{SWEEPS}/{args.sweep_id}")
        report = client.get(f"{SWEEPS}/{args.sweep_id}/report")
    if args.json:
        out(json.dumps({"sweep": sweep, "report": report}, indent=2))
    else:
        out(format_members(sweep) + "\n\n" + format_report(report))
    return 0


def cmd_sweeps_cancel(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        sweep = client.request("POST", f"{SWEEPS}/{args.sweep_id}/cancel")
    out(f"{sweep['id']} {sweep['status']}")
    return 0


def add_sweep_commands(sub: argparse._SubParsersAction) -> None:
    from replay_engine.cli import set_option  # the engine commands' --set, for the same specs

    server = server_options()
    sweeps = sub.add_parser(
        "sweeps", parents=[server], help="replay sweeps and their data-efficiency reports"
    )
    sweeps_sub = sweeps.add_subparsers(dest="sweeps_command", required=True)
    p = sweeps_sub.add_parser(
        "submit",
        parents=[server],
        help="submit a sweep file (an engine spec plus `sweep:`); uploads its local data files",
    )
    p.add_argument("spec")
    p.add_argument("--suffix", default=None, help="added to each member's fine-tuned model name")
    set_option(p)
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for every member, then print the report; exit 1 unless all succeed",
    )
    timeout_option(p)
    p.set_defaults(func=command(cmd_sweeps_submit))

    p = sweeps_sub.add_parser("show", parents=[server], help="a sweep's members and its report")
    p.add_argument("sweep_id")
    p.add_argument("--json", action="store_true", help="the sweep and report objects as JSON")
    p.set_defaults(func=command(cmd_sweeps_show))

    p = sweeps_sub.add_parser("cancel", parents=[server], help="cancel a sweep's unfinished jobs")
    p.add_argument("sweep_id")
    p.set_defaults(func=command(cmd_sweeps_cancel))
