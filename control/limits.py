"""Per-deployment limits on what one job may cost: `REPLAYFT_MAX_STEPS_PER_JOB` optimizer steps
and `REPLAYFT_MAX_TOKENS_PER_JOB` tokens (steps x batch_size x seq_len), so that nobody queues a
job that cannot finish.

A job's exact step count is known only once its data is tokenized (the files worker's
`prepare_job`, or `POST /v1/fine_tuning/plan`), so the limits are checked twice:
- at submission, on what the spec and the training file's stats tell: `total_steps` when it is
  set, else the engine's own schedule (`schedule.resolve_plan`) over the sequences that the
  file's token count (recorded by upload validation) packs into: an estimate;
- on the resolved plan, exactly, before the job is queued for training.
Either way the answer names the setting to change (its engine field path) and the limit.

Per-team limits share the pool between teams. Each is a `teams` column, set by an admin
(`PATCH /v1/admin/teams/{id}`), or else the deployment's default (`REPLAYFT_TEAM_*`); unset means
no limit:
- `max_running_jobs`: how many of its jobs train at once. The scheduler (control.scheduling)
  leaves the rest queued; nothing is refused.
- `max_queued_jobs`: how many wait (validating_files, queued, paused). A submission past it is a
  429 naming the limit; it clears as jobs start, so no Retry-After can be promised.
- `monthly_tokens`, `monthly_gpu_hours`: what its jobs trained on this UTC calendar month (a job
  counts in the month it finished, a running one in the current month: `month_usage`). Once spent,
  submissions are 429s with Retry-After at the start of next month. A job already admitted runs
  to its end, so a month may overshoot by the jobs running when the quota ran out.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from control.db.models import Job, Team
from control.settings import Settings

if TYPE_CHECKING:
    from replay_engine.spec import JobSpec


def _culprit(spec: JobSpec) -> str:
    """The setting to blame in `param`: total_steps when set; else replay.fraction (or
    stage2_duration) when it multiplies the steps more than the epochs do and more than ten-fold
    (r near 1); else n_epochs, the usual knob when the data is simply large."""
    if spec.total_steps is not None:
        return "total_steps"
    r = spec.replay.fraction or 0.0
    d = spec.replay.stage2_duration or 1.0
    ordinary = max(spec.n_epochs, 10.0)
    factors = {"replay.fraction": 1 / (1 - r), "replay.stage2_duration": 1 / d}
    worst = max(factors, key=factors.__getitem__)
    return worst if factors[worst] > ordinary else "n_epochs"


def plan_problem(
    spec: JobSpec, total_steps: int, settings: Settings, *, estimated: bool = False
) -> tuple[str, str] | None:
    """(engine field path, message) when a plan of `total_steps` steps is over a limit."""
    tokens = total_steps * spec.batch_size * spec.seq_len
    about = "about " if estimated else ""
    param = _culprit(spec)
    if total_steps > settings.max_steps_per_job:
        return param, (
            f"this job would train {about}{total_steps:,} steps; this deployment allows at most "
            f"{settings.max_steps_per_job:,} steps per job (REPLAYFT_MAX_STEPS_PER_JOB). "
            f"Lower {param}."
        )
    if tokens > settings.max_tokens_per_job:
        return param, (
            f"this job would train on {about}{tokens:,} tokens ({total_steps:,} steps of "
            f"batch_size {spec.batch_size} x seq_len {spec.seq_len}); this deployment allows at "
            f"most {settings.max_tokens_per_job:,} tokens per job (REPLAYFT_MAX_TOKENS_PER_JOB). "
            f"Lower {param}."
        )
    return None


def estimated_steps(spec: JobSpec, target_tokens: int | None) -> int | None:
    """The job's step count as far as it is known before its data is tokenized: `total_steps`,
    or the schedule over the target sequences that `target_tokens` make (less the validation
    holdout and the subset). None when neither is known or the schedule cannot be resolved
    (the worker then reports why, on the real data)."""
    from replay_engine.schedule import resolve_plan
    from replay_engine.spec import SpecError

    if spec.total_steps is not None:
        return spec.total_steps
    if not spec.training_file or not target_tokens:
        return None
    kept = 1.0 if spec.validation_file else 1 - spec.val_fraction
    sequences = math.floor(target_tokens * kept * spec.target_subset_fraction / spec.seq_len)
    try:
        return resolve_plan(spec, max(1, sequences), 1).total_steps
    except (SpecError, OverflowError, ValueError):
        return None


# ---------------------------------------------------------------------------- per team
TEAM_LIMITS = ("max_running_jobs", "max_queued_jobs", "monthly_tokens", "monthly_gpu_hours")
WAITING_STATUSES = ("validating_files", "queued", "paused")


def team_limits(team: Team, settings: Settings) -> dict[str, int | float | None]:
    """The team's effective limits: its own, else the deployment's default."""
    return {
        name: getattr(team, name)
        if getattr(team, name) is not None
        else getattr(settings, f"team_{name}")
        for name in TEAM_LIMITS
    }


def job_processes(spec: dict[str, Any] | None) -> int:
    """GPU processes a job occupies (processes per machine x machines)."""
    distributed = (spec or {}).get("distributed") or {}
    return int(distributed.get("gpus_per_node", 1)) * int(distributed.get("nodes", 1))


def gpu_seconds(
    spec: dict[str, Any] | None, started: float, ended: float, since: float = 0.0
) -> float:
    """A job's training time from `started` (or `since`, if later) to `ended`, times the GPU
    processes it occupies: what usage and the monthly quotas count."""
    return max(0.0, ended - max(started, since)) * job_processes(spec)


def month_start(at: float) -> int:
    day = dt.datetime.fromtimestamp(at, dt.UTC)
    return int(dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC).timestamp())


def next_month_start(at: float) -> int:
    day = dt.datetime.fromtimestamp(at, dt.UTC)
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return int(dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp())


def month_usage(session: Session, team_id: str, at: float | None = None) -> dict[str, float]:
    """{"tokens", "gpu_hours"} the team's jobs trained this UTC month: each finished job in the
    month it finished (its trained tokens, or the tokens it had seen when it failed or was
    cancelled), each running one so far."""
    at = time.time() if at is None else at
    start = month_start(at)
    jobs = session.execute(
        select(
            Job.status, Job.trained_tokens, Job.progress, Job.spec, Job.started_at, Job.finished_at
        ).where(
            Job.team_id == team_id,
            Job.started_at.is_not(None),
            or_(Job.finished_at >= start, Job.status == "running"),
        )
    )
    tokens, seconds = 0, 0.0
    for status, trained, progress, spec, started, finished in jobs:
        if status == "succeeded":
            tokens += trained or 0
        else:
            tokens += int((progress or {}).get("tokens_seen") or 0)
        seconds += gpu_seconds(spec, started, finished if finished is not None else at, start)
    return {"tokens": tokens, "gpu_hours": seconds / 3600}


@dataclass
class LimitReached:
    """A team limit a submission runs into: the 429's `param`, message and Retry-After."""

    limit: str
    message: str
    retry_after: int | None = None


def submission_limit(
    session: Session, team: Team, settings: Settings, *, new_jobs: int = 1
) -> LimitReached | None:
    """Whether `team` may submit `new_jobs` more jobs now."""
    limits = team_limits(team, settings)
    queued_cap = limits["max_queued_jobs"]
    if queued_cap is not None:
        waiting = session.scalar(
            select(func.count(Job.pk)).where(
                Job.team_id == team.id, Job.status.in_(WAITING_STATUSES)
            )
        )
        if waiting + new_jobs > queued_cap:
            return LimitReached(
                "max_queued_jobs",
                f"team {team.name} has {waiting} jobs waiting to run and may have at most "
                f"{queued_cap}; submit again once some have started, or cancel some.",
            )
    return monthly_quota_spent(session, team, limits)


def monthly_quota_spent(
    session: Session, team: Team, limits: dict[str, int | float | None]
) -> LimitReached | None:
    """The first of the team's monthly quotas (of its effective `limits`) it has used up this
    UTC month. Submissions get it as a 429, and queued jobs of the team wait for the next
    month (control.scheduling), so the jobs admitted before it ran out do not overshoot it."""
    if limits["monthly_tokens"] is None and limits["monthly_gpu_hours"] is None:
        return None
    at = time.time()
    used = month_usage(session, team.id, at)
    retry_after = max(1, next_month_start(at) - int(at))
    for name, key, unit, shown in (
        ("monthly_tokens", "tokens", "tokens", "{:,.0f}"),
        ("monthly_gpu_hours", "gpu_hours", "GPU-hours", "{:,.2f}"),
    ):
        quota = limits[name]
        if quota is not None and used[key] >= quota:
            return LimitReached(
                name,
                f"team {team.name} has used {shown.format(used[key])} of its "
                f"{shown.format(quota)} {unit} this month; submissions resume, and its queued "
                f"jobs start, when the month ends (UTC).",
                retry_after,
            )
    return None
