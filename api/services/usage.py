"""Usage per team and UTC day: jobs created and finished, trained tokens, GPU-seconds.

Read from the jobs table, so it needs no bookkeeping of its own: a job counts on the day it was
created (`jobs_created`) and on the day it finished (its final status, its trained tokens, and
its training time x processes). A job still running counts its time so far on today's row."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from control.db.models import Job, Team
from control.limits import gpu_seconds

FINAL = {"succeeded": "jobs_succeeded", "failed": "jobs_failed", "cancelled": "jobs_cancelled"}


def day_of(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date().isoformat()


def day_start(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def usage(
    *, session: Session, teams: list[Team], start: dt.date, end: dt.date
) -> list[dict[str, Any]]:
    """One row per team and day from `start` to `end` (inclusive) on which anything happened,
    ordered by team name, then day."""
    now = time.time()
    lo, hi = day_start(start), day_start(end + dt.timedelta(days=1))
    by_id = {t.id: t for t in teams}
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(team_id: str, day: str) -> dict[str, Any]:
        team = by_id[team_id]
        return rows.setdefault(
            (team.name, day), {"team_id": team.id, "team": team.name, "date": day}
        )

    jobs = session.scalars(
        select(Job).where(
            Job.team_id.in_(list(by_id)),
            or_(
                Job.created_at.between(lo, hi - 1),
                Job.finished_at.between(lo, hi - 1),
                Job.status == "running",
            ),
        )
    )
    for job in jobs:
        if lo <= job.created_at < hi:
            r = row(job.team_id, day_of(job.created_at))
            r["jobs_created"] = r.get("jobs_created", 0) + 1
        if job.finished_at is not None and lo <= job.finished_at < hi:
            r = row(job.team_id, day_of(job.finished_at))
            if job.status in FINAL:
                r[FINAL[job.status]] = r.get(FINAL[job.status], 0) + 1
            if job.status == "succeeded":
                r["trained_tokens"] = r.get("trained_tokens", 0) + (job.trained_tokens or 0)
            if job.started_at is not None:
                seconds = gpu_seconds(job.spec, job.started_at, job.finished_at)
                r["gpu_seconds"] = r.get("gpu_seconds", 0.0) + seconds
        elif job.status == "running" and job.started_at is not None and lo <= now < hi:
            r = row(job.team_id, day_of(now))
            seconds = gpu_seconds(job.spec, job.started_at, now)
            r["gpu_seconds"] = r.get("gpu_seconds", 0.0) + seconds
    return [rows[key] for key in sorted(rows)]
