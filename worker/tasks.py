"""Celery tasks: thin wrappers that pass ids to `worker.runner` (which re-reads the rows).

A transient database error (SQLite busy or locked, a lost connection) is retried with a doubling
delay, at most DB_RETRIES times; every runner function claims its row with a conditional UPDATE,
so a retry (or a duplicate delivery) does the work once. Past that, the outbox relay sends the
task again later, since its row has not moved (worker.delivery).
"""

from __future__ import annotations

from collections.abc import Callable

from worker.app import PREPARE_JOB, RUN_JOB, RUN_NODE, VALIDATE_FILE, celery_app

DB_RETRIES = 6  # 1 + 2 + ... + 32 s


def _with_db_retries(task, work: Callable[[], object]) -> object:
    from worker import runner

    try:
        return work()
    except Exception as exc:
        if not runner.transient_db_error(exc) or task.request.retries >= DB_RETRIES:
            raise
        retries = task.request.retries
        raise task.retry(exc=exc, countdown=2**retries, max_retries=DB_RETRIES) from exc


@celery_app.task(name=VALIDATE_FILE, bind=True)
def validate_file(self, file_id: str) -> None:
    from worker import runner

    _with_db_retries(self, lambda: runner.validate_file(file_id))


@celery_app.task(name=PREPARE_JOB, bind=True)
def prepare_job(self, job_id: str) -> None:
    from worker import runner

    _with_db_retries(self, lambda: runner.prepare_job(job_id))


@celery_app.task(name=RUN_JOB, bind=True, max_retries=120)
def run_job(self, job_id: str) -> None:
    from worker import runner

    if _with_db_retries(self, lambda: runner.run_job(job_id)) == runner.RETRY_LATER:
        # the job is queued but its previous worker still holds the lease (it is stopping)
        raise self.retry(countdown=5)


@celery_app.task(name=RUN_NODE, bind=True)
def run_node(self, job_id: str, leader: str, node_rank: int, master: str) -> None:
    from worker import runner

    _with_db_retries(self, lambda: runner.run_node(job_id, leader, node_rank, master))
