"""Which queued job a free worker trains next: fair share between teams, priority within one.

Every queued job has a `run_job` message (control.queue), but a message is an offer of a worker,
not an order to run its own job: the worker that receives one calls `claim_next`, which claims
the job that fairness picks among all that are queued. So however the broker orders messages,
and whatever one team queued first, the next free worker goes to:

1. the team with the least running work (GPU processes of its running jobs), among teams below
   their `max_running_jobs` and with their monthly quotas not used up (control.limits: a team
   whose quota ran out after its jobs were admitted keeps them queued until the next month);
2. on a tie, the team that least recently started a job (round robin: a team that waits is
   next as soon as it has the least running work, so none starves);
3. within the team, its job with the highest `priority`, then the oldest.

A message whose own job another worker already took simply takes another; messages and queued
jobs stay one to one, because every queued job keeps its outbox row until it leaves `queued`
(worker.delivery). When every queued job waits on a running limit, the message does nothing and
the job waits for its row to be sent again: `wake_team` makes that immediate once one of the
team's jobs stops running.
"""

from __future__ import annotations

import time

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from control import lifecycle
from control.db.models import Job, JobEvent, OutboxMessage, Team
from control.db.session import session_scope
from control.limits import job_processes, monthly_quota_spent, team_limits
from control.queue import RUN_JOB
from control.settings import get_settings

ATTEMPTS = 5  # picks to try when other workers claim the chosen job first


def fair_order(session: Session) -> list[str]:
    """The ids of the queued jobs free to claim now, in the order they should start (at most one
    per team at the head: after a start the order changes, so callers take the first)."""
    settings = get_settings()
    cutoff = time.time() - settings.heartbeat_timeout
    running: dict[str, int] = {}
    count: dict[str, int] = {}
    for team_id, spec in session.execute(
        select(Job.team_id, Job.spec).where(Job.status == "running")
    ):
        running[team_id] = running.get(team_id, 0) + job_processes(spec)
        count[team_id] = count.get(team_id, 0) + 1
    last_start = dict(
        session.execute(
            select(Job.team_id, func.max(Job.started_at))
            .where(Job.started_at.is_not(None))
            .group_by(Job.team_id)
        ).all()
    )
    waiting = session.execute(
        select(Job.id, Job.team_id, Job.created_at, Job.pk)
        .where(
            Job.status == "queued",
            or_(Job.lease_owner.is_(None), Job.heartbeat_at < cutoff),
        )
        .order_by(Job.priority.desc(), Job.created_at, Job.pk)
    ).all()
    teams = session.scalars(select(Team).where(Team.id.in_({row.team_id for row in waiting})))
    caps, spent = {}, set()
    for team in teams:
        limits = team_limits(team, settings)
        caps[team.id] = limits["max_running_jobs"]
        if monthly_quota_spent(session, team, limits) is not None:
            spent.add(team.id)
    heads: dict[str, str] = {}  # team -> the job it would start
    oldest: dict[str, tuple[int, int]] = {}  # team -> its longest-waiting job, for ties
    for job_id, team_id, created_at, pk in waiting:
        cap = caps[team_id]
        if team_id in spent or (cap is not None and count.get(team_id, 0) >= cap):
            continue
        heads.setdefault(team_id, job_id)
        oldest[team_id] = min(oldest.get(team_id, (created_at, pk)), (created_at, pk))
    ranked = sorted(heads, key=lambda t: (running.get(t, 0), last_start.get(t) or 0, oldest[t]))
    return [heads[t] for t in ranked]


def claim_next(owner: str) -> str | None:
    """Claim, as `owner`, the queued job that should start next, whichever job's message
    brought this worker. None: nothing may start now."""
    for _ in range(ATTEMPTS):
        with session_scope() as session:
            order = fair_order(session)
        if not order:
            return None
        if lifecycle.claim(order[0], owner):
            return order[0]
    return None


def note_quota_wait(session: Session, job_id: str) -> bool:
    """If the queued job waits because its team's monthly quota is spent, say so on the job
    (once: not again while its newest event says it); -> whether it waits for that. Uncommitted."""
    job = session.scalar(select(Job).where(Job.id == job_id))
    if job is None or job.status != "queued":
        return False
    team = session.scalar(select(Team).where(Team.id == job.team_id))
    spent = monthly_quota_spent(session, team, team_limits(team, get_settings()))
    if spent is None:
        return False
    message = f"Waiting to start: {spent.message}"
    newest = session.scalar(
        select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.pk.desc())
    )
    if newest != message:
        lifecycle.add_event(session, job_id, message, level="warn", limit=spent.limit)
    return True


def wake_team(session: Session, team_id: str) -> None:
    """Make the run_job rows of the team's queued jobs due now (uncommitted): one of its jobs
    stopped running, so one that waited on the team's running limit may start."""
    queued = select(Job.id).where(Job.team_id == team_id, Job.status == "queued")
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.task == RUN_JOB, OutboxMessage.subject.in_(queued))
        .values(due_at=time.time())
    )
