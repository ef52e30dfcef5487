"""Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the database is
reachable). Both are unauthenticated, for load balancers and orchestrators.

The API needs only the database: tasks go through the outbox, which the workers relay to the
broker. So a broker outage does not make the API unready; `/readyz` still reports whether the
broker answers, for operators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
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
