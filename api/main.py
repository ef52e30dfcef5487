"""The FastAPI application: `create_app()` wires routers, error handlers and start-up.

Start-up runs the database migrations and removes partial uploads left by a killed API; a
thread removes them on a schedule after that (api.services.files.remove_stale_uploads). The API
never talks to the broker: it records tasks in the outbox (control.queue), and the workers'
maintenance processes send them and run the periodic checks (worker.maintenance).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from api import access_log
from api.errors import install_error_handlers
from api.frontend import mount_dashboard
from api.metrics import RequestMetrics, build_registry
from api.openapi import error_responses, install_openapi
from api.routes import (
    admin,
    completions,
    files,
    fine_tuning_jobs,
    health,
    models,
    sweeps,
    usage,
    webhooks,
)
from control.settings import get_settings

log = logging.getLogger("replayft.api")


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def _stale_upload_sweeper(stop: threading.Event) -> None:
    from api.services.files import remove_stale_uploads

    settings = get_settings()
    interval = max(1.0, min(300.0, settings.upload_stale_seconds / 2))
    while not stop.wait(interval):
        try:
            remove_stale_uploads(settings)
        except OSError:  # e.g. the data dir's filesystem briefly gone; try again next time
            log.exception("stale upload check failed")


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    from control.db.migrate import upgrade

    settings = get_settings()
    settings.ensure_dirs()
    upgrade()
    from api.services.files import remove_stale_uploads

    remove_stale_uploads(settings)
    # job validation uses the engine (torch, transformers): import it now, not in the first request
    import replay_engine.models  # noqa: F401
    import replay_engine.trainer  # noqa: F401

    stop = threading.Event()
    threading.Thread(
        target=_stale_upload_sweeper, args=(stop,), name="stale-upload-sweeper", daemon=True
    ).start()
    try:
        yield
    finally:
        stop.set()


def create_app() -> FastAPI:
    app = FastAPI(
        title="ReplayFT",
        version="0.1.0",
        description="Fine-tuning as a service with generic replay (OpenAI fine-tuning API shape).",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    access_log.install()  # download links carry a token in the query
    app.state.metrics_registry = build_registry()
    app.add_middleware(RequestMetrics, registry=app.state.metrics_registry)  # outermost: sees 500s
    app.include_router(health.router)
    v1 = APIRouter(prefix="/v1", responses=error_responses(401, 503))
    v1.include_router(files.router)
    v1.include_router(fine_tuning_jobs.router)
    v1.include_router(models.router)
    v1.include_router(completions.router)
    v1.include_router(sweeps.router)
    v1.include_router(admin.router)
    v1.include_router(usage.router)
    v1.include_router(webhooks.router)
    app.include_router(v1)
    install_openapi(app)
    mount_dashboard(app)  # last: its fallback route must not shadow the API
    return app
