"""The periodic checks, in a process of their own beside each worker.

A Celery worker's main process forks its pool children. A thread of it that uses the database
while it forks (the lost-job monitor used to be one) can hold SQLite's or malloc's lock at that
instant, and the child inherits the lock held forever: it hangs at its first query. So the main
process runs no database threads; it starts this process with the `spawn` method (a fresh
interpreter, nothing inherited) when the worker is ready, and this process runs the checks in a
loop:

- `delivery.relay_outbox`, every `REPLAYFT_RELAY_INTERVAL` seconds: send the tasks recorded in
  the outbox, and again while they have not taken effect;
- `delivery.sweep_states`, every `REPLAYFT_SWEEP_INTERVAL` seconds: waiting files and jobs with no
  task get one;
- `control.lifecycle.requeue_lost_jobs`, every third of `REPLAYFT_HEARTBEAT_TIMEOUT`: running jobs whose
  worker stopped heartbeating go back to the queue;
- `webhooks.send_due`, every `REPLAYFT_WEBHOOK_INTERVAL` seconds, in a thread of its own (this
  process never forks, so threads are safe here): the webhook deliveries that are due, whose
  receivers may take up to `REPLAYFT_WEBHOOK_TIMEOUT` each to answer, which must not delay the
  checks above.

With `REPLAYFT_WORKER_METRICS_PORT` set it also serves the worker's Prometheus metrics
(worker.metrics), from a server thread of its own, so the worker's main process keeps no thread.

Every check is a conditional UPDATE, so one such process per worker (several per deployment) is
safe. The process leaves when the worker that started it goes away. `replayft maintenance` runs
the same checks in the foreground, without a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("replayft.maintenance")


def start(send: Callable[..., None]) -> multiprocessing.process.BaseProcess:
    """Start the checks in a spawned child of this process (which must not be a pool child);
    `send(task_name, *args)` hands a task to the broker (a module-level function: the child
    receives it by name)."""
    process = multiprocessing.get_context("spawn").Process(
        target=run, args=(os.getpid(), send), name="replayft-maintenance", daemon=True
    )
    process.start()
    return process


def run(parent_pid: int, send: Callable[..., None]) -> None:
    """The spawned child: the checks, for as long as the worker that started it lives."""
    from replay_engine.launcher import die_with_parent

    die_with_parent()
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s: %(levelname)s/maintenance] %(message)s"
    )
    from control.settings import get_settings
    from worker import metrics

    port = get_settings().worker_metrics_port
    if port is not None and metrics.enabled():
        metrics.serve(port)  # the worker's processes' counts, from here: no thread in the worker
    check_forever(send, keep_going=lambda: os.getppid() == parent_pid)


def check_forever(send: Callable[..., None], keep_going: Callable[[], bool]) -> None:
    """Run each check on its interval while `keep_going()`; `replayft maintenance` runs this in
    the foreground, for a deployment that wants the checks without a worker."""
    from control.lifecycle import requeue_lost_jobs
    from control.settings import get_settings
    from worker.delivery import relay_outbox, sweep_states
    from worker.webhooks import send_due

    settings = get_settings()
    checks = [  # (what, how often, the check)
        ("outbox relay", settings.relay_interval, lambda: relay_outbox(send)),
        ("state sweep", settings.sweep_interval, sweep_states),
        ("lost-job check", max(1.0, min(30.0, settings.heartbeat_timeout / 3)), requeue_lost_jobs),
    ]
    webhook_sender = threading.Thread(
        target=run_checks,
        args=([("webhook sender", settings.webhook_interval, send_due)], keep_going),
        name="replayft-webhooks",
        daemon=True,
    )
    webhook_sender.start()
    run_checks(checks, keep_going)
    webhook_sender.join(timeout=5)  # a claimed delivery left unrecorded is only due again later


def run_checks(
    checks: list[tuple[str, float, Callable[[], object]]], keep_going: Callable[[], bool]
) -> None:
    """Run each (what, how often, check) on its interval while `keep_going()`."""
    next_due = [0.0] * len(checks)
    while keep_going():
        for i, (what, every, check) in enumerate(checks):
            if time.monotonic() < next_due[i]:
                continue
            next_due[i] = time.monotonic() + every
            try:
                check()
            except Exception:  # a database or broker hiccup must not end the checks
                log.exception("%s failed", what)
        time.sleep(max(0.05, min(next_due) - time.monotonic()))
