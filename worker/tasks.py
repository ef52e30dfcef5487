"""Celery tasks: thin wrappers that pass ids to `worker.runner` (which re-reads the rows)."""

from __future__ import annotations

from worker.app import PREPARE_JOB, RUN_JOB, RUN_NODE, VALIDATE_FILE, celery_app


@celery_app.task(name=VALIDATE_FILE)
def validate_file(file_id: str) -> None:
    from worker import runner

    runner.validate_file(file_id)


@celery_app.task(name=PREPARE_JOB)
def prepare_job(job_id: str) -> None:
    from worker import runner

    runner.prepare_job(job_id)


@celery_app.task(name=RUN_JOB, bind=True, max_retries=120)
def run_job(self, job_id: str) -> None:
    from worker import runner

    if runner.run_job(job_id) == runner.RETRY_LATER:
        # the job is queued but its previous worker still holds the lease (it is stopping)
        raise self.retry(countdown=5)


@celery_app.task(name=RUN_NODE)
def run_node(job_id: str, leader: str, node_rank: int, master: str) -> None:
    from worker import runner

    runner.run_node(job_id, leader, node_rank, master)
