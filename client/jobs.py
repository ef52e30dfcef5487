"""`replayft files ...` and `replayft jobs ...`: see the `client` package docstring."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from client.follow import (
    JOBS,
    Follower,
    event_line,
    follow_poll,
    follow_stream,
    job_outcome,
    new_events,
    wait_job,
)
from client.http import CLIError, client_from_args, list_all
from client.options import command, positive_int, server_options, timeout_option
from client.output import err, out, table, ts
from client.submit import (
    PURPOSES,
    build_submission,
    deadline_after,
    file_failure,
    submit,
    wait_files,
)
from control.statuses import STATUSES as JOB_STATUSES


def cmd_files_upload(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file", 2)
    with client_from_args(args) as client:
        file = client.upload(path, args.purpose)
        if args.wait:
            file = wait_files(client, [file], deadline_after(args.timeout))[0]
    out(json.dumps(file, indent=2))
    if file.get("status") == "error":
        raise CLIError(file_failure(file), 2)
    return 0


def cmd_jobs_submit(args: argparse.Namespace) -> int:
    from replay_engine.spec import SpecError, load_spec

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        raise CLIError(f"{spec_path}: no such file", 2)
    try:
        spec = load_spec(spec_path, args.set)
    except SpecError as exc:
        raise CLIError("\n".join(f"{path}: {message}" for path, message in exc.errors), 2) from None
    submission = build_submission(spec, suffix=args.suffix)
    for note in submission.notes:
        err(f"note: {note}")
    deadline = deadline_after(args.timeout)
    with client_from_args(args) as client, tempfile.TemporaryDirectory(prefix="replayft-") as tmp:
        job = submit(client, submission, JOBS, Path(tmp), deadline)
        out(f"{job['id']} {job['status']}")
        if not args.wait:
            return 0
        try:
            job = wait_job(client, job["id"], deadline)
        except KeyboardInterrupt:
            err(
                f"stopped waiting; job {job['id']} carries on (`replayft jobs logs {job['id']} "
                f"--follow`, `replayft jobs cancel {job['id']}`)"
            )
            return 130
        return job_outcome(job)


def _job_row(job: dict[str, Any]) -> list[str]:
    progress = job.get("progress") or {}
    total = progress.get("total_steps") or (job.get("hyperparameters") or {}).get("total_steps")
    fraction = (job.get("replay") or {}).get("fraction")
    return [
        job["id"],
        job["status"],
        job.get("model") or "-",
        f"{progress.get('step', 0)}/{total or '?'}",
        "-" if fraction is None else f"{fraction:g}",
        ts(job.get("created_at")),
    ]


def cmd_jobs_list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    page = 100 if args.status else min(args.limit, 100)
    with client_from_args(args) as client:
        for job in list_all(client, JOBS, page_size=page):
            if args.status is None or job["status"] == args.status:
                rows.append(job)
                if len(rows) >= args.limit:
                    break
    if not rows:
        err("no fine-tuning jobs" + (f" with status {args.status}" if args.status else ""))
        return 0
    header = ["ID", "STATUS", "MODEL", "STEP", "REPLAY", "CREATED (UTC)"]
    out(table([_job_row(j) for j in rows], header))
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        job = client.get(f"{JOBS}/{args.job_id}")
    out(json.dumps(job, indent=2))
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        job = client.request("POST", f"{JOBS}/{args.job_id}/cancel")
    out(f"{job['id']} {job['status']}")
    return 0


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        job = client.get(f"{JOBS}/{args.job_id}")
        if not args.follow:
            for event in new_events(client, job["id"], set()):
                out(event_line(event))
            return 0

        def planned_steps() -> int | None:
            return (client.get(f"{JOBS}/{job['id']}").get("progress") or {}).get("total_steps")

        follower = Follower(total_of=planned_steps)
        follower.job(job)
        follow = follow_poll if args.poll else follow_stream
        status = follow(client, job["id"], follower)
        if status in ("succeeded", "paused"):
            err(f"{job['id']}: {status}")
            return 0
        final = client.get(f"{JOBS}/{job['id']}")
        if status == "failed":
            message = (final.get("error") or {}).get("message") or "no error message"
            raise CLIError(f"job {job['id']} failed: {message}", 1)
        raise CLIError(f"job {job['id']} was {status}", 1)


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    """Register `files` and `jobs` on the `replayft` parser."""
    from replay_engine.cli import set_option  # the engine commands' --set, for the same specs

    server = server_options()

    files = sub.add_parser("files", parents=[server], help="data files on a ReplayFT server")
    files_sub = files.add_subparsers(dest="files_command", required=True)
    p = files_sub.add_parser(
        "upload", parents=[server], help="upload a JSONL/.txt/Parquet file; prints the file object"
    )
    p.add_argument("path")
    p.add_argument("--purpose", required=True, choices=PURPOSES)
    p.add_argument(
        "--wait", action="store_true", help="wait until validated; exit 2 if the file has errors"
    )
    timeout_option(p)
    p.set_defaults(func=command(cmd_files_upload))

    jobs = sub.add_parser("jobs", parents=[server], help="fine-tuning jobs on a ReplayFT server")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    p = jobs_sub.add_parser(
        "submit",
        parents=[server],
        help="submit an engine YAML spec as a job (uploads its local data files)",
    )
    p.add_argument("spec", help="the YAML spec `replayft train` takes")
    p.add_argument("--suffix", default=None, help="added to the fine-tuned model's name")
    set_option(p)
    p.add_argument(
        "--wait", action="store_true", help="wait for the job; exit 1 unless it succeeds"
    )
    timeout_option(p)
    p.set_defaults(func=command(cmd_jobs_submit))

    p = jobs_sub.add_parser("list", parents=[server], help="newest jobs first, as a table")
    p.add_argument("--status", choices=JOB_STATUSES, default=None)
    p.add_argument("--limit", type=positive_int, default=20)
    p.set_defaults(func=command(cmd_jobs_list))

    p = jobs_sub.add_parser("show", parents=[server], help="one job as JSON")
    p.add_argument("job_id")
    p.set_defaults(func=command(cmd_jobs_show))

    p = jobs_sub.add_parser("cancel", parents=[server], help="cancel a job")
    p.add_argument("job_id")
    p.set_defaults(func=command(cmd_jobs_cancel))

    p = jobs_sub.add_parser("logs", parents=[server], help="a job's events, oldest first")
    p.add_argument("job_id")
    p.add_argument(
        "--follow",
        action="store_true",
        help="stream events and per-step metrics until the job ends (exit 1 if it fails or is "
        "cancelled)",
    )
    p.add_argument(
        "--poll",
        action="store_true",
        help="with --follow: poll instead of using the Server-Sent Events stream",
    )
    p.set_defaults(func=command(cmd_jobs_logs))
