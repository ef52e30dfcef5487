"""The Celery application: two queues, explicit task names, settings for long GPU tasks.

- `training`: one long task per worker process. `task_acks_late` + `worker_prefetch_multiplier=1`
  mean a worker holds exactly the job it runs, and the message is only acknowledged when the job
  ends; with `task_reject_on_worker_lost` a killed worker's job goes back to the queue. Running a
  job twice is safe anyway: `runner.run_job` claims the job with an atomic lease and resumes from
  its newest checkpoint.
- `files`: cheap work (file validation and token counts, job plan resolution) that must never wait
  behind training; `replayft worker --queues files` runs a CPU-only worker for it.

Pool children and fork: a child forked while another thread of the main process is inside SQLite
(or malloc) inherits that lock held and hangs at its first query. With Redis the main process
forks from its one thread, and runs no database threads (the periodic checks live in their own
process, `worker.maintenance`). The embedded SQLite broker has no event loop, so Celery forks from
a pool-supervisor thread while the main thread polls the broker's SQLite file: there the pool
starts its children with `spawn` (fresh interpreters, nothing inherited) instead.

`task_create_missing_queues=False` turns a typo in a queue name into an error instead of a queue
that nobody consumes. Results are not stored: state lives in the service's database.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from kombu import Exchange, Queue

from control.queue import PREPARE_JOB, RUN_JOB, RUN_NODE, VALIDATE_FILE
from control.settings import get_settings

TRAINING_QUEUE = "training"
FILES_QUEUE = "files"


def create_celery_app() -> Celery:
    settings = get_settings()
    app = Celery("replayft", broker=settings.broker_url, include=["worker.tasks"])
    transport_options: dict = {}
    if settings.broker_url.startswith("sqla+sqlite"):
        from kombu.transport import sqlalchemy as sqla_transport

        # the embedded broker is a SQLite file shared by the API and worker processes
        transport_options = {"connect_args": {"timeout": 60}}
        # A worker holds one unacknowledged message at a time and looks for the next one after
        # this pause: kombu's default, 1 s, caps a worker at about one upload a second. (Set on
        # the class: this transport hands every transport option to create_engine.)
        sqla_transport.Transport.polling_interval = 0.2
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        # unacknowledged messages are redelivered after this long; a training job can run for
        # days, and lost workers are detected by heartbeat instead (control.lifecycle.requeue_lost_jobs)
        transport_options = {"visibility_timeout": 7 * 24 * 3600}
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (TRAINING_QUEUE, FILES_QUEUE)
        ],
        task_default_queue=FILES_QUEUE,
        task_routes={
            RUN_JOB: {"queue": TRAINING_QUEUE, "routing_key": TRAINING_QUEUE},
            RUN_NODE: {"queue": TRAINING_QUEUE, "routing_key": TRAINING_QUEUE},
            VALIDATE_FILE: {"queue": FILES_QUEUE, "routing_key": FILES_QUEUE},
            PREPARE_JOB: {"queue": FILES_QUEUE, "routing_key": FILES_QUEUE},
        },
        task_create_missing_queues=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Prefetch 1 still lets a worker take one more message than it runs after the broker
        # reconnects: the running task's delivery belonged to the old connection, so the new
        # channel counts nothing unacknowledged. With Redis, Celery can instead refuse to
        # reserve anything while every pool process is busy (a one-process training worker then
        # holds exactly the job it runs); other brokers ignore the option with a warning.
        worker_disable_prefetch=settings.broker_url.startswith(("redis://", "rediss://")),
        # a broker blip must not stop a training job: its lease and heartbeat, not the message,
        # say who runs it (Celery's default will change to cancelling it)
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_pool_start_method="spawn" if settings.broker_url.startswith("sqla+") else "fork",
        # how often a child process is replaced depends on the queues: see child_recycling
    )
    return app


celery_app = create_celery_app()


def child_recycling(queues: str) -> list[str]:
    """Worker options for replacing task children. A training run gets a fresh child, so its
    (GPU) memory is released when it ends. Files work is short and would pay the imports and
    the tokenizer load of a fresh child on every upload, so a files-only child lives on until
    it has grown past 2 GiB (checked after each task) or served 500 tasks."""
    if TRAINING_QUEUE in queues.split(","):
        return ["--max-tasks-per-child=1"]
    return ["--max-tasks-per-child=500", f"--max-memory-per-child={2 * 1024 * 1024}"]  # KiB


def send(task_name: str, *args: str | int) -> None:
    """Hand a task to the broker by name: only the outbox relay does (worker.delivery); everyone
    else records the task with control.queue.enqueue in their own transaction."""
    celery_app.send_task(task_name, args=list(args))


# ---------------------------------------------------------------------------- worker start-up
_maintenance = None  # the periodic checks' process (worker.maintenance), started when ready


def _embedded_broker_in_wal_mode(broker_url: str) -> None:
    """Put the embedded broker's SQLite file in WAL mode (it stays so), as the service database
    is: its pollers then never block a task being sent. kombu opens it with the default
    rollback journal, where a reader and a writer can fail each other with "database is locked"
    whatever the busy timeout."""
    import sqlite3
    from contextlib import closing

    prefix = "sqla+sqlite:///"
    if broker_url.startswith(prefix):
        with closing(sqlite3.connect(broker_url[len(prefix) :], timeout=60)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")


def _on_worker_init(**_kwargs) -> None:
    from control.db.migrate import upgrade
    from control.db.session import get_engine

    settings = get_settings()
    settings.ensure_dirs()
    upgrade()
    _embedded_broker_in_wal_mode(settings.broker_url)
    # no pooled connection of this process may reach a forked child
    get_engine().dispose()
    if celery_app.conf.worker_pool_start_method == "fork":
        # Task children are forked from this process, so importing the engine (torch,
        # transformers: ~3 s) here once spares each new child that wait. Importing starts no
        # threads and no CUDA.
        import replay_engine.trainer  # noqa: F401
        import worker.runner  # noqa: F401


def _on_worker_ready(**_kwargs) -> None:
    global _maintenance
    from worker import maintenance

    _maintenance = maintenance.start(send)


def _on_worker_shutdown(**_kwargs) -> None:
    if _maintenance is not None and _maintenance.is_alive():
        _maintenance.terminate()
        _maintenance.join(timeout=10)


def _on_child_start(**_kwargs) -> None:
    # A forked child must not use connections it inherited from the main process (a socket
    # shared by two processes gets corrupted): drop the inherited pool without closing the
    # parent's connections, and open its own.
    from control.db.session import get_engine

    get_engine().dispose(close=False)


_task_started: dict[str, float] = {}  # task id -> monotonic start, in the process running it


def _on_task_start(task_id: str | None = None, **_kwargs) -> None:
    _task_started[task_id] = time.monotonic()


def _on_task_end(task_id: str | None = None, task=None, state: str | None = None, **_kw) -> None:
    from worker import metrics

    started = _task_started.pop(task_id, None)
    if task is not None and started is not None:
        metrics.task_finished(task.name, state or "unknown", time.monotonic() - started)


def _on_child_exit(pid: int | None = None, **_kwargs) -> None:
    from worker import metrics

    metrics.process_exited(pid or os.getpid())


def _connect_signals() -> None:
    from celery import signals

    signals.task_prerun.connect(_on_task_start, weak=False)
    signals.task_postrun.connect(_on_task_end, weak=False)
    signals.worker_process_shutdown.connect(_on_child_exit, weak=False)

    signals.worker_init.connect(_on_worker_init, weak=False)
    signals.worker_process_init.connect(_on_child_start, weak=False)
    signals.worker_ready.connect(_on_worker_ready, weak=False)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)


_connect_signals()
