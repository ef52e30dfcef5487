"""Watching a job: waiting for its end with progress lines, and `jobs logs --follow` over the
server's event stream (SSE), falling back to polling.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from client.http import Client, CLIError, list_all
from client.output import err, num, out, ts
from client.submit import POLL_S, expired
from control.statuses import TERMINAL_STATUSES

PROGRESS_EVERY_S = 5.0


STREAM_RECONNECTS = 5


JOBS = "/fine_tuning/jobs"


def progress_text(job: dict[str, Any], record: dict[str, Any] | None = None) -> str:
    """One progress line: step, stage, the train loss of `record` (the latest train record, if
    known), tokens and ETA."""
    progress = job.get("progress") or {}
    parts = [f"step {progress.get('step', 0)}/{progress.get('total_steps') or '?'}"]
    if progress.get("stage") is not None:
        parts.append(f"stage {progress['stage']}")
    if record and record.get("train_loss") is not None:
        loss = f"loss {record['train_loss']:.4f}"
        split = [
            f"{label} {record[name]:.4f}"
            for label, name in (("target", "train_loss_target"), ("generic", "train_loss_generic"))
            if record.get(name) is not None
        ]
        parts.append(loss + (f" ({', '.join(split)})" if split else ""))
    if progress.get("tokens_seen"):
        parts.append(f"{progress['tokens_seen']:,} tokens")
    if progress.get("eta_seconds") is not None:
        parts.append(f"eta {progress['eta_seconds']:.0f}s")
    return ", ".join(parts)


def eval_text(record: dict[str, Any]) -> str:
    losses = [
        f"{name} {value:.4f}"
        for name, value in record.items()
        if name.startswith("val_loss") and isinstance(value, int | float)
    ]
    return f"eval at step {record.get('step')}: {', '.join(losses) or 'no losses'}"


def _metrics(client: Client, job_id: str, **params: Any) -> list[dict[str, Any]]:
    return client.get(f"{JOBS}/{job_id}/metrics", **params).get("data") or []


def wait_job(client: Client, job_id: str, deadline: float | None = None) -> dict[str, Any]:
    """Poll until the job is finished or paused, reporting status changes, progress with the
    latest train loss (every PROGRESS_EVERY_S), and each evaluation's losses as it arrives."""
    last_status, last_step, last_report = None, None, 0.0
    next_eval_step = 0  # evals at steps before this one have been printed
    evals_read_at = None  # (status, step) when evals were last looked for
    while True:
        job = client.get(f"{JOBS}/{job_id}")
        status = job["status"]
        stopped = status in TERMINAL_STATUSES or status == "paused"
        if status != last_status and not stopped:
            err(f"{job_id}: {status}")
        step = (job.get("progress") or {}).get("step")
        if status != "validating_files" and (status, step) != evals_read_at:
            evals_read_at = (status, step)
            for record in _metrics(client, job_id, type="eval", start_step=next_eval_step):
                err(f"  {eval_text(record)}")
                next_eval_step = max(next_eval_step, record.get("step", 0) + 1)
        now = time.monotonic()
        # a progress line with the newest train loss every PROGRESS_EVERY_S while running, and
        # one for the last step when the job stops (a short job can end between two polls)
        due = status == "running" and now - last_report >= PROGRESS_EVERY_S
        if step and step != last_step and (due or stopped):
            # the newest train record: from the job's step on, thinned to its last one
            latest = _metrics(client, job_id, type="train", start_step=step, max_points=1)
            err(f"  {progress_text(job, latest[-1] if latest else None)}")
            last_step, last_report = step, now
        if status != last_status and stopped:  # after the last evals and progress
            err(f"{job_id}: {status}")
        last_status = status
        if stopped:
            return job
        if expired(deadline):
            raise CLIError(
                f"timed out waiting for job {job_id} ({status}, {progress_text(job)}); it carries "
                f"on: `replayft jobs logs {job_id} --follow`, `replayft jobs cancel {job_id}`",
                1,
            )
        time.sleep(POLL_S)


def job_outcome(job: dict[str, Any]) -> int:
    """Final line and exit status for a job that has stopped."""
    status = job["status"]
    line = f"{job['id']} {status}"
    if job.get("fine_tuned_model"):
        line += f" {job['fine_tuned_model']}"
    out(line)
    if status == "succeeded":
        return 0
    if status == "failed":
        message = (job.get("error") or {}).get("message") or "no error message"
        raise CLIError(f"job {job['id']} failed: {message}", 1)
    if status == "paused":
        raise CLIError(f"job {job['id']} is paused; it continues once resumed", 1)
    raise CLIError(f"job {job['id']} was {status}", 1)


def event_line(event: dict[str, Any]) -> str:
    return f"{ts(event.get('created_at'))}  {event.get('level', 'info'):<5}  {event['message']}"


def metrics_line(record: dict[str, Any], total_steps: int | None = None) -> str:
    """One compact line for an engine `train` record (evals already arrive as events)."""
    parts = [f"step {record.get('step')}/{total_steps or '?'}"]
    if record.get("stage") is not None:
        parts.append(f"stage {record['stage']}")
    parts.append(f"loss {num(record.get('train_loss'))}")
    split = [
        f"{label} {record[name]:.4f}"
        for label, name in (("target", "train_loss_target"), ("generic", "train_loss_generic"))
        if record.get(name) is not None
    ]
    if split:
        parts.append(f"({', '.join(split)})")
    if record.get("lr") is not None:
        parts.append(f"lr {record['lr']:.2e}")
    if record.get("grad_norm") is not None:
        parts.append(f"gnorm {record['grad_norm']:.2f}")
    if record.get("tokens_per_second") is not None:
        parts.append(f"{record['tokens_per_second']:,.0f} tok/s")
    return "  ".join(parts)


def new_events(client: Client, job_id: str, seen: set[str]) -> list[dict[str, Any]]:
    """Events not in `seen`, oldest first (the API lists newest first: page until a seen one)."""
    fresh: list[dict[str, Any]] = []
    for event in list_all(client, f"{JOBS}/{job_id}/events", page_size=100):
        if event["id"] in seen:
            break
        fresh.append(event)
    fresh.reverse()
    seen.update(e["id"] for e in fresh)
    return fresh


@dataclass
class Follower:
    """What has been printed while following a job, so reconnects print nothing twice."""

    total_steps: int | None = None
    status: str | None = None
    events: set[str] = field(default_factory=set)
    steps: set[Any] = field(default_factory=set)
    # asks the server for the job's planned steps: a follow that began before planning can get
    # its first train records before any job message carries the total
    total_of: Callable[[], int | None] | None = None

    def event(self, event: dict[str, Any]) -> None:
        if event["id"] not in self.events:
            self.events.add(event["id"])
            out(event_line(event))

    def record(self, record: dict[str, Any]) -> None:
        if record.get("type") != "train" or record.get("step") in self.steps:
            return  # eval results are also events; a resumed run may resend a step
        self.steps.add(record.get("step"))
        if self.total_steps is None and self.total_of is not None:
            self.total_steps = self.total_of()
        out(metrics_line(record, self.total_steps))

    def job(self, job: dict[str, Any]) -> None:
        self.status = job.get("status", self.status)
        self.total_steps = (job.get("progress") or {}).get("total_steps") or self.total_steps


def follow_stream(client: Client, job_id: str, follower: Follower) -> str:
    """Print the job's SSE stream until the server says `done`; reconnects on a dropped
    connection. -> the final status."""
    failures = 0
    while True:
        try:
            for name, data in client.sse(f"{JOBS}/{job_id}/stream"):
                failures = 0
                if name == "event":
                    follower.event(data)
                elif name == "metrics":
                    follower.record(data)
                elif name == "job":
                    follower.job(data)
                elif name == "done":
                    return data.get("status") or follower.status or "unknown"
        except client.httpx.TransportError as exc:
            failures += 1
            if failures > STREAM_RECONNECTS:
                raise client._unreachable(exc) from None
            err(f"(stream interrupted: {exc or type(exc).__name__}; reconnecting)")
        else:
            failures += 1  # ended without `done`: a proxy or a restarting server
            if failures > STREAM_RECONNECTS:
                raise CLIError(f"the event stream of {job_id} keeps ending early", 1)
        time.sleep(min(2.0**failures, 10.0))


def follow_poll(client: Client, job_id: str, follower: Follower) -> str:
    """The same output as `follow_stream` by polling events, metrics and the job."""
    last_step = 0
    while True:
        job = client.get(f"{JOBS}/{job_id}")  # first: what follows includes all before it
        follower.job(job)
        for event in new_events(client, job_id, follower.events.copy()):
            follower.event(event)
        records = (
            client.get(f"{JOBS}/{job_id}/metrics", start_step=last_step, type="train").get("data")
            or []
        )
        for record in records:
            follower.record(record)
            last_step = max(last_step, record.get("step") or 0)
        if job["status"] in TERMINAL_STATUSES or job["status"] == "paused":
            return job["status"]
        time.sleep(POLL_S)
