"""Getting recorded work to the workers: the outbox relay and the state sweep.

`relay_outbox()` sends each due outbox row (control.queue) to Celery. A row is acknowledged
by its task's effect on the subject's own row, not by the broker: while the file is still
`uploaded`, the job still `validating_files` or `queued`, or a machine has not joined, the row is
due again `redeliver_after` seconds after a send, then twice that, and so on up to an hour. Once
the state has moved (or the subject is gone) the row is deleted. So a message lost in the broker
(Redis restarted empty, a task that died on a database error) is sent again, and a broker that is
down only delays the relay, which leaves the row due and tries again on its next round.

`sweep_states()` looks at every waiting state for work with no task behind it: files `uploaded`,
jobs `validating_files` or `queued` with no outbox row get one (rows from before the outbox, or
any path that lost its task). `running` jobs whose heartbeat stopped are the lost-job check's
(control.lifecycle.requeue_lost_jobs), which the maintenance process runs on its own, shorter interval.

Both run in every worker's maintenance process. Several relays may run at once: each claims a row
with a conditional UPDATE of its `due_at` before sending, and a duplicate message would be
harmless anyway, because every task claims its row with a conditional UPDATE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from control.db.models import File, Job, JobNode, OutboxMessage
from control.db.session import session_scope
from control.queue import PREPARE_JOB, RUN_JOB, RUN_NODE, VALIDATE_FILE, enqueue
from control.settings import get_settings

log = logging.getLogger("replayft.delivery")

MAX_REDELIVERY_DELAY = 3600.0
BATCH = 200


def taken_effect(session: Session, message: OutboxMessage) -> bool:
    """Has the task's work started or become moot? Read from the subject's own row."""
    if message.task == VALIDATE_FILE:
        status = session.scalar(select(File.status).where(File.id == message.subject))
        return status != "uploaded"
    job = session.execute(
        select(Job.status, Job.lease_owner).where(Job.id == message.subject)
    ).first()
    if job is None:
        return True
    if message.task == PREPARE_JOB:
        return job.status != "validating_files"
    if message.task == RUN_JOB:
        return job.status != "queued"
    if message.task == RUN_NODE:
        _, leader, node_rank, _ = message.args
        if job.status != "running" or job.lease_owner != leader:
            return True  # that run of the job is over
        joined = select(JobNode.pk).where(
            JobNode.job_id == message.subject,
            JobNode.leader == leader,
            JobNode.node_rank == node_rank,
        )
        return session.scalar(joined) is not None
    log.warning("outbox row %s names an unknown task %r; dropped", message.pk, message.task)
    return True


def redelivery_delay(sent_count: int) -> float:
    return min(get_settings().redeliver_after * 2 ** max(0, sent_count - 1), MAX_REDELIVERY_DELAY)


def relay_outbox(send: Callable[..., None]) -> int:
    """Send every due outbox row once (or drop it if its work has begun); -> messages sent.
    Stops at the first failed send (the broker is away): the row stays due."""
    sent = 0
    with session_scope() as session:
        due = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.due_at <= time.time())
            .order_by(OutboxMessage.pk)
            .limit(BATCH)
        ).all()
        session.commit()  # end the read transaction: the claims below are short ones
        for message in due:
            if taken_effect(session, message):
                session.execute(delete(OutboxMessage).where(OutboxMessage.pk == message.pk))
                session.commit()
                continue
            now = time.time()
            claimed = session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.pk == message.pk, OutboxMessage.due_at == message.due_at)
                .values(
                    due_at=now + redelivery_delay(message.sent_count + 1),
                    sent_count=message.sent_count + 1,
                    sent_at=now,
                )
            ).rowcount
            session.commit()
            if not claimed:
                continue  # another relay took it
            try:
                send(message.task, *message.args)
            except Exception as exc:
                log.warning("broker unreachable, %s left due: %s", message.task, exc)
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.pk == message.pk)
                    .values(due_at=now, sent_count=message.sent_count)
                )
                session.commit()
                break
            sent += 1
    return sent


def sweep_states() -> int:
    """Give every waiting file and job that has no outbox row one; -> tasks recorded."""
    pending = select(OutboxMessage.subject)
    with session_scope() as session:
        found = [
            (VALIDATE_FILE, file_id)
            for file_id in session.scalars(
                select(File.id).where(File.status == "uploaded", File.id.not_in(pending))
            )
        ]
        for status, task in (("validating_files", PREPARE_JOB), ("queued", RUN_JOB)):
            found += [
                (task, job_id)
                for job_id in session.scalars(
                    select(Job.id).where(Job.status == status, Job.id.not_in(pending))
                )
            ]
        for task, subject in found:
            log.warning(
                "%s %s had no task; enqueued %s",
                "file" if task == VALIDATE_FILE else "job",
                subject,
                task,
            )
            enqueue(session, task, subject)
        session.commit()
    return len(found)
