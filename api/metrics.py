"""Service metrics for Prometheus (`GET /metrics`, through `prometheus-client`).

Two kinds of numbers:
- Counted as requests pass (an ASGI middleware): requests by method, route template and status,
  and their latency. The route is the template (`/v1/fine_tuning/jobs/{job_id}`), never the raw
  path, so job ids do not become label values.
- Read from the database when scraped (a collector): jobs by status, work waiting per queue
  (outbox rows not yet relayed to the broker, by task, and jobs queued for a training worker),
  the oldest heartbeat of a running job, and tokens trained by finished jobs. The database is
  the truth every API replica shares, so any replica may be scraped and each says the same.

Each app owns its registry (tests build many apps in one process). No team names, file names
or keys appear in any label.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from control.db.models import Job, OutboxMessage
from control.db.session import session_scope
from control.statuses import STATUSES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceCollector(Collector):
    """The database-backed numbers, computed at each scrape."""

    def collect(self) -> Iterator[Metric]:
        with session_scope() as session:
            by_status = {
                status: count
                for status, count in session.execute(
                    select(Job.status, func.count()).group_by(Job.status)
                )
            }
            outbox = {
                task: count
                for task, count in session.execute(
                    select(OutboxMessage.task, func.count()).group_by(OutboxMessage.task)
                )
            }
            oldest_beat = session.scalar(
                select(func.min(Job.heartbeat_at)).where(Job.status == "running")
            )
            tokens = session.scalar(select(func.coalesce(func.sum(Job.trained_tokens), 0)))

        jobs = GaugeMetricFamily("replayft_jobs", "Jobs by status.", labels=["status"])
        for status in STATUSES:  # every status, zeros too, so a series never disappears
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs

        waiting = GaugeMetricFamily(
            "replayft_queue_depth",
            "Work waiting: outbox rows not yet relayed to the broker (queue=outbox, by task), "
            "and jobs queued for a training worker (queue=training).",
            labels=["queue", "task"],
        )
        for task, count in sorted(outbox.items()):
            waiting.add_metric(["outbox", task], count)
        waiting.add_metric(["training", "replayft.run_job"], by_status.get("queued", 0))
        yield waiting

        beat = GaugeMetricFamily(
            "replayft_running_job_heartbeat_age_seconds",
            "Seconds since the stalest running job's worker last reported (0 with none running); "
            "a lost worker shows as a growing age until the job is requeued.",
        )
        beat.add_metric([], max(0.0, time.time() - oldest_beat) if oldest_beat else 0.0)
        yield beat

        trained = CounterMetricFamily(
            "replayft_trained_tokens", "Tokens trained by jobs that finished training."
        )
        trained.add_metric([], int(tokens or 0))
        yield trained


def route_template(scope) -> str:
    """The matched route as a template (`/v1/fine_tuning/jobs/{job_id}`): the request path with
    each path parameter put back as its name (a parameter that spans segments, like the
    dashboard's deep links, as one); `unmatched` when no route took the request."""
    if "route" not in scope:
        return "unmatched"
    parts = scope["path"].split("/")
    for name, value in scope.get("path_params", {}).items():
        value = str(value)
        if value in parts:
            parts[parts.index(value)] = f"{{{name}}}"
        elif value:  # several segments: the last occurrence, as the route's pattern ends there
            head, found, tail = "/".join(parts).rpartition(value)
            if found:
                parts = f"{head}{{{name}}}{tail}".split("/")
    return "/".join(parts)


class RequestMetrics:
    """ASGI middleware counting HTTP requests and timing them until the response is sent."""

    def __init__(self, app, registry: CollectorRegistry):
        self.app = app
        self.requests = Counter(
            "replayft_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "replayft_http_request_duration_seconds",
            "Time from request to the end of the response, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = route_template(scope)
            method = scope["method"]
            self.requests.labels(method, route, str(status)).inc()
            self.latency.labels(method, route).observe(time.perf_counter() - started)


def build_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ServiceCollector())
    return registry
