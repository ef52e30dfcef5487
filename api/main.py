"""The FastAPI application: `create_app()` wires routers, error handlers and start-up.

Start-up runs the database migrations. The API never talks to the broker: it records tasks in the
outbox (api.services.outbox), and the workers' maintenance processes send them and run the
periodic checks (worker.maintenance).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from api.errors import install_error_handlers
from api.frontend import mount_dashboard
from api.routes import files, fine_tuning_jobs, health, models, sweeps
from api.settings import get_settings

log = logging.getLogger("replayft.api")


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    from api.db.migrate import upgrade

    settings = get_settings()
    settings.ensure_dirs()
    upgrade()
    # job validation uses the engine (torch, transformers): import it now, not in the first request
    import replay_engine.models  # noqa: F401
    import replay_engine.trainer  # noqa: F401

    yield


def create_app() -> FastAPI:
    app = FastAPI(
        title="ReplayFT",
        version="0.1.0",
        description="Fine-tuning as a service with generic replay (OpenAI fine-tuning API shape).",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    v1 = APIRouter(prefix="/v1")
    v1.include_router(files.router)
    v1.include_router(fine_tuning_jobs.router)
    v1.include_router(models.router)
    v1.include_router(sweeps.router)
    app.include_router(v1)
    mount_dashboard(app)  # last: its fallback route must not shadow the API
    return app
