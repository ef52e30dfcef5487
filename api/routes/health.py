"""Liveness (`/healthz`: the process answers), readiness (`/readyz`: the database is
reachable) and Prometheus metrics (`/metrics`). All unauthenticated, for load balancers,
orchestrators and scrapers.

The API needs only the database: tasks go through the outbox, which the workers relay to the
broker. So a broker outage does not make the API unready; `/readyz` still reports whether the
broker answers, for operators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from control.db.session import get_engine
from control.settings import get_settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database unreachable"}})
def readyz() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the reason is for operators
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        from kombu import Connection

        with Connection(get_settings().broker_url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = checks["database"] == "ok"
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format (api/metrics.py): request counts and latency, jobs by status,
    queue depth, running jobs' heartbeat age, tokens trained. Unauthenticated, like the health
    checks: it names no team, file or key; expose it to the scraper's network only."""
    body = await run_in_threadpool(generate_latest, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
