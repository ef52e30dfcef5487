"""The task queue interface, and its one implementation: the transactional outbox.

Whoever changes a row so that a task must run (a file uploaded, a job created, queued, resumed or
requeued, a machine asked to join) calls `queue.enqueue(session, TASK, subject_id, ...)` before
its commit. The `Outbox` records the intent as an `outbox` row in the same transaction, so either
both the change and its task exist or neither does. Nothing here talks to the broker; a database
that accepts the change is all a request needs, so a broker outage costs no request and loses no
work.

The relay (`worker.delivery.relay_outbox`, run by every worker's maintenance process) sends due
rows to Celery, and sends them again with a growing delay until the task has taken effect, which
it reads from the subject's own row (the file left `uploaded`, the job left `validating_files` or
`queued`, ...); then the row is deleted. Tasks are idempotent (each claims its row with a
conditional UPDATE), so a message sent twice does the work once.

The API is given its queue as a dependency (`api.deps.QueueDep`), so fast API tests can replace
it with one that records what was enqueued; it never imports the worker.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session

from control.db.models import OutboxMessage

# task names, shared by the API (which only records them) and the worker (which defines them)
RUN_JOB = "replayft.run_job"
RUN_NODE = "replayft.run_node"  # one more machine of a multi-machine job
VALIDATE_FILE = "replayft.validate_file"
PREPARE_JOB = "replayft.prepare_job"


class TaskQueue(Protocol):
    def enqueue(self, session: Session, task: str, subject: str, *args: str | int) -> None:
        """Record in `session` (not committed) that `task(subject, *args)` must run once the
        session commits; nothing must run if it rolls back."""


class Outbox:
    """The production queue: a row in the `outbox` table, relayed to Celery by the workers."""

    def enqueue(self, session: Session, task: str, subject: str, *args: str | int) -> None:
        session.add(OutboxMessage(task=task, args=[subject, *args], subject=subject))


outbox = Outbox()


def enqueue(session: Session, task: str, subject: str, *args: str | int) -> None:
    """Enqueue through the outbox: what the workers and the command line use."""
    outbox.enqueue(session, task, subject, *args)
