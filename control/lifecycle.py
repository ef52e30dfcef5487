"""The job state machine: every change of a job's `status`, whoever makes it (an API request or a
worker), is a function here.

    validating_files --prepared--> queued --claim--> running --succeed--> succeeded
    validating_files|queued|running --fail--> failed
    running --requeue (worker lost, machine lost, transient database error)--> queued
    validating_files|queued|paused --cancel--> cancelled     running --cancel--> cancelled (+control)
    queued --pause--> paused                                  running --pause--> control=pause,
                                                              then --stopped_for_pause--> paused
    paused --resume--> queued (the engine resumes from the newest checkpoint in the job's folder)

A running job is held by one worker's lease (`lease_owner`, refreshed `heartbeat_at`). `claim`
takes it with one conditional UPDATE, only if no live worker holds it, so a job never runs twice
at once; every worker-side transition names its owner, so a worker that lost the lease changes
nothing. The API's transitions act on the request's session and leave the commit to the caller;
the worker's open their own session and commit. Every task a transition makes necessary is
enqueued in the same transaction (control.queue), so a committed state always has its task, and
every final status records its webhook events in that transaction too (control.webhooks).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from control import webhooks
from control.db.models import Job, JobEvent, Team, now
from control.db.session import session_scope
from control.queue import RUN_JOB, TaskQueue, outbox
from control.settings import get_settings
from control.statuses import ACTIVE_STATUSES, STATUSES, TERMINAL_STATUSES  # noqa: F401


class InvalidTransition(Exception):
    """The job's status does not allow what was asked (the API answers 409)."""


def add_event(
    session: Session, job_id: str, message: str, level: str = "info", **data: Any
) -> None:
    session.add(JobEvent(job_id=job_id, message=message, level=level, data=data or None))


def fine_tuned_name(*, base: str, team: Team, suffix: str | None, job_id: str) -> str:
    """The model id a job's result gets: OpenAI's `ft:BASE:ORG:SUFFIX:ID` shape."""
    root = base.split(":")[1] if base.startswith("ft:") else base
    return f"ft:{root}:{team.name.replace(':', '-')}:{suffix or ''}:{job_id}"


# ---------------------------------------------------------------------------- asked by the API
def cancel(session: Session, job: Job, reason: str = "by request") -> None:
    """Cancel an unfinished job in the session (uncommitted)."""
    cancel_all(session, [job], reason)


def cancel_all(session: Session, jobs: list[Job], reason: str = "by request") -> None:
    """Cancel unfinished jobs in the session (uncommitted): all their rows change before the
    webhook events are recorded (see control.webhooks.jobs_finished for why that order)."""
    for job in jobs:
        if job.status in TERMINAL_STATUSES:
            raise InvalidTransition(
                f"Job {job.id} has already {job.status}; it cannot be cancelled."
            )
    for job in jobs:
        if job.status == "running":
            job.control = "cancel"  # the worker stops at the next step and releases the job
        job.status = "cancelled"
        job.finished_at = now()
        add_event(session, job.id, f"Job cancelled {reason}.")
    webhooks.jobs_finished(session, [job.id for job in jobs])


def pause(session: Session, job: Job) -> None:
    if job.status == "queued":
        job.status = "paused"
        add_event(session, job.id, "Job paused before it started.")
    elif job.status == "running":
        if job.control != "pause":
            job.control = "pause"
            add_event(session, job.id, "Pause requested: checkpointing at the next step.")
    else:
        raise InvalidTransition(
            f"Job {job.id} is {job.status}; only queued or running jobs can be paused."
        )


def resume(session: Session, job: Job, queue: TaskQueue) -> None:
    if job.status == "running" and job.control == "pause":
        raise InvalidTransition(
            f"Job {job.id} is still pausing (saving a checkpoint); resume it once its status is "
            f"'paused'."
        )
    if job.status != "paused":
        raise InvalidTransition(f"Job {job.id} is {job.status}; only paused jobs can be resumed.")
    job.status, job.control = "queued", None
    job.attempts = 0  # the lost-worker limit counts failures since the last resume
    add_event(session, job.id, "Job resumed; it continues from its last checkpoint.")
    queue.enqueue(session, RUN_JOB, job.id)


# ---------------------------------------------------------------------------- done by workers
def prepared(job_id: str, plan: dict[str, Any]) -> bool:
    """validating_files -> queued, with its resolved plan. False if it was cancelled meanwhile."""
    with session_scope() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "validating_files")
            .values(
                status="queued",
                plan=plan,
                progress={"step": 0, "total_steps": plan["total_steps"], "tokens_seen": 0},
            )
        )
        if not result.rowcount:
            return False
        transition = plan["transition_step"]
        add_event(
            session,
            job_id,
            f"Files validated; {plan['total_steps']} steps planned"
            + (f", stage 2 from step {transition}" if transition is not None else "")
            + ". Job queued.",
            plan=plan,
        )
        outbox.enqueue(session, RUN_JOB, job_id)
        session.commit()
        return True


def claim(job_id: str, owner: str) -> bool:
    """Atomically take the job if it is runnable and no live worker holds it."""
    cutoff = time.time() - get_settings().heartbeat_timeout
    with session_scope() as session:
        result = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.status.in_(ACTIVE_STATUSES),
                or_(Job.lease_owner.is_(None), Job.heartbeat_at < cutoff),
            )
            .values(
                status="running",
                lease_owner=owner,
                heartbeat_at=time.time(),
                attempts=Job.attempts + 1,
            )
        )
        session.commit()
        return bool(result.rowcount)


def fail(job_id: str, error: dict[str, Any], traceback: str, *, owner: str | None = None) -> None:
    """Any unfinished job -> failed with `error` ({code, message, param}); the traceback goes to
    an error event (visible to the job's own team only)."""
    with session_scope() as session:
        query = update(Job).where(
            Job.id == job_id, Job.status.in_(("validating_files", *ACTIVE_STATUSES))
        )
        if owner is not None:
            query = query.where(Job.lease_owner == owner)
        result = session.execute(
            query.values(status="failed", error=error, finished_at=now(), lease_owner=None)
        )
        if result.rowcount:
            add_event(session, job_id, error["message"], level="error", traceback=traceback)
            webhooks.jobs_finished(session, [job_id])
        session.commit()


def succeed(job_id: str, owner: str, values: dict[str, Any], summary: dict[str, Any]) -> None:
    """running -> succeeded (`values`: fine_tuned_model, final_checkpoint, trained_tokens). A job
    cancelled during its last step stays cancelled, and is only released."""
    mine = (Job.id == job_id, Job.lease_owner == owner)
    with session_scope() as session:
        outcome = session.execute(
            update(Job)
            .where(*mine, Job.status == "running")
            .values(
                status="succeeded",
                **values,
                finished_at=now(),
                estimated_finish=None,
                lease_owner=None,
                control=None,
            )
        )
        if outcome.rowcount:
            name = values["fine_tuned_model"]
            loss = summary.get("final_val_loss_target")
            detail = f" Final val_loss_target {loss:.4f}." if loss is not None else ""
            add_event(session, job_id, f"New fine-tuned model created: {name}.{detail}")
            add_event(session, job_id, "The job has successfully completed.", summary=summary)
            webhooks.jobs_finished(session, [job_id])
        else:
            session.execute(update(Job).where(*mine).values(lease_owner=None))
        session.commit()


def stopped_for_pause(job_id: str, owner: str, steps_completed: int) -> None:
    """running (control=pause) -> paused, once the engine saved its checkpoint."""
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
            .values(status="paused", control=None, lease_owner=None, estimated_finish=None)
        )
        add_event(session, job_id, f"Job paused after step {steps_completed}.")
        session.commit()


def release(job_id: str, owner: str, message: str) -> None:
    """A worker lets go of a job that was cancelled while it ran (it is `cancelled` already)."""
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(lease_owner=None, control=None)
        )
        add_event(session, job_id, message)
        session.commit()


def requeue(job_id: str, owner: str, reason: str) -> bool:
    """running -> queued, to resume from its last checkpoint, after a failure outside the job
    (`reason` says which), up to `max_job_attempts` starts. False: not requeued (out of attempts,
    or cancelled or paused meanwhile)."""
    settings = get_settings()
    with session_scope() as session:
        result = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.lease_owner == owner,
                Job.status == "running",
                Job.control.is_(None),
                Job.attempts < settings.max_job_attempts,
            )
            .values(status="queued", lease_owner=None)
        )
        if not result.rowcount:
            return False
        add_event(
            session,
            job_id,
            f"{reason}; requeued to resume from its last checkpoint.",
            level="warn",
        )
        outbox.enqueue(session, RUN_JOB, job_id)
        session.commit()
    return True


def requeue_lost_jobs() -> list[str]:
    """Requeue (or fail, after too many attempts) running jobs whose worker stopped beating.
    Each UPDATE is conditional, so concurrent checks do not double-enqueue."""
    settings = get_settings()
    cutoff = time.time() - settings.heartbeat_timeout
    requeued = []
    with session_scope() as session:
        lost = list(
            session.execute(
                select(Job.id, Job.attempts).where(
                    Job.status == "running",
                    or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
                )
            )
        )
        for job_id, attempts in lost:
            stale = (
                Job.id == job_id,
                Job.status == "running",
                or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
            )
            if attempts >= settings.max_job_attempts:
                message = (
                    f"The worker running this job stopped responding ({attempts} attempts); "
                    f"giving up. Resume is possible from its last checkpoint with a new job."
                )
                values = dict(
                    status="failed",
                    error={"code": "worker_lost", "message": message, "param": None},
                    finished_at=now(),
                    lease_owner=None,
                )
            else:
                message = (
                    f"The worker running this job stopped responding for over "
                    f"{settings.heartbeat_timeout:g}s; requeued to resume from its last checkpoint."
                )
                values = dict(status="queued", lease_owner=None)
            if session.execute(update(Job).where(*stale).values(**values)).rowcount:
                add_event(session, job_id, message, level="warn")
                if values["status"] == "queued":
                    outbox.enqueue(session, RUN_JOB, job_id)
                    requeued.append(job_id)
                else:
                    webhooks.jobs_finished(session, [job_id])
                session.commit()
        session.commit()
    return requeued
