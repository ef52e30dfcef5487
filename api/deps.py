"""Dependencies shared by the routes.

- `SessionDep`: a database session per request, closed as soon as the route function returns
  (`scope="function"`), so a streamed response (SSE, downloads) holds no connection while it is
  sent. At most pool size + overflow requests hold one at a time (`db_slot`); the others wait in
  the event loop, holding neither a thread nor a connection, and after `REPLAYFT_DB_POOL_TIMEOUT`
  seconds get 503 with Retry-After: load is shed instead of piling up on the pool.
- `QueueDep`, `InferenceDep`: where tasks are enqueued and completions generated (the outbox,
  the model-serving process); tests override them at that boundary.
- `CurrentKey`: the `Authorization: Bearer` key's row (401 if missing, unknown or revoked);
  `CurrentTeam`: the team owning it; `AdminKey`: the key, if it is an admin key (403 otherwise).
- `FileDep`, `JobDep`, `SweepDep`, `WebhookDep`: the row named in the path, if it belongs to the caller's team. Another
  team's id answers 404 exactly like a missing one, so ids never leak across teams.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found, server_busy
from api.schemas.common import PathId
from api.services import download_links
from api.services.teams import record_use, team_for_key
from control.db.models import ApiKey, File, Job, Sweep, Team, Webhook
from control.db.session import get_sessionmaker
from control.inference import HttpInference, Inference
from control.queue import TaskQueue, outbox
from control.settings import get_settings

_slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> Semaphore


@asynccontextmanager
async def db_slot() -> AsyncIterator[None]:
    """Admission to the database for one request: one of pool size + overflow slots, waited for
    at most the pool timeout (then 503). Waiting happens here, in the event loop, and not in a
    thread holding a pooled connection, which is what starved the pool under load."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    settings = get_settings()
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow)
    try:
        async with asyncio.timeout(settings.db_pool_timeout):
            await slots.acquire()
    except TimeoutError:
        raise server_busy() from None
    try:
        yield
    finally:
        slots.release()


@asynccontextmanager
async def short_session() -> AsyncIterator[Session]:
    """A session for a bit of work inside a route that must not hold one throughout (uploads)."""
    async with db_slot():
        session = get_sessionmaker()()
        try:
            yield session
        finally:
            await run_in_threadpool(session.close)


async def get_db() -> AsyncIterator[Session]:
    async with short_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db, scope="function")]


def get_queue() -> TaskQueue:
    """Where routes enqueue tasks: the transactional outbox (tests may override this)."""
    return outbox


QueueDep = Annotated[TaskQueue, Depends(get_queue)]


def get_inference() -> Inference:
    """Where completions are generated: the model-serving process at REPLAYFT_INFERENCE_URL
    (tests may override this)."""
    return HttpInference(get_settings().inference_url)


InferenceDep = Annotated[Inference, Depends(get_inference)]


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


# documents the Bearer scheme in OpenAPI; the header itself is read by `authenticate`, so that a
# missing and a malformed one get their own messages
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer rft-...`")


def authenticate(session: Session, authorization: str | None) -> tuple[Team, ApiKey]:
    """(team, key) of an `Authorization: Bearer <key>` header value, or 401; records the use."""
    if not authorization:
        raise _unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("Malformed Authorization header: expected 'Bearer <key>'.")
    found = team_for_key(session=session, key=key.strip())
    if found is None:
        raise _unauthorized("Incorrect API key provided.")
    if found[1].revoked_at is not None:
        raise _unauthorized("This API key has been revoked.")
    record_use(session=session, key=found[1])
    return found


DownloadToken = Annotated[
    str | None,
    Query(
        max_length=200,
        description="A token from `download_link`, instead of the Authorization header.",
    ),
]


def download_team(session: Session, request: Request, token: str | None, subject: str) -> Team:
    """The team a download is for: the Authorization header's, or, given a `download_link`
    token, the team of the key that signed it for `subject` (api.services.download_links)."""
    if token is None:
        return authenticate(session, request.headers.get("authorization"))[0]
    return download_links.team_for_token(session=session, token=token, subject=subject)


def get_caller(
    request: Request,
    session: SessionDep,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> tuple[Team, ApiKey]:
    return authenticate(session, request.headers.get("authorization"))


Caller = Annotated[tuple[Team, ApiKey], Depends(get_caller)]


def get_current_team(caller: Caller) -> Team:
    return caller[0]


def get_current_key(caller: Caller) -> ApiKey:
    return caller[1]


CurrentTeam = Annotated[Team, Depends(get_current_team)]
CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


def get_admin_key(key: CurrentKey) -> ApiKey:
    if not key.is_admin:
        raise APIError(403, "This endpoint needs an admin API key.", code="admin_key_required")
    return key


AdminKey = Annotated[ApiKey, Depends(get_admin_key)]


def get_file(file_id: PathId, session: SessionDep, team: CurrentTeam) -> File:
    file = session.scalar(select(File).where(File.id == file_id, File.team_id == team.id))
    if file is None:
        raise not_found("file", file_id, param="file_id")
    return file


FileDep = Annotated[File, Depends(get_file)]


def get_job(job_id: PathId, session: SessionDep, team: CurrentTeam) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.team_id == team.id))
    if job is None:
        raise not_found("fine-tuning job", job_id, param="fine_tuning_job_id")
    return job


JobDep = Annotated[Job, Depends(get_job)]


def get_sweep(sweep_id: PathId, session: SessionDep, team: CurrentTeam) -> Sweep:
    sweep = session.scalar(select(Sweep).where(Sweep.id == sweep_id, Sweep.team_id == team.id))
    if sweep is None:
        raise not_found("sweep", sweep_id, param="sweep_id")
    return sweep


SweepDep = Annotated[Sweep, Depends(get_sweep)]


def get_webhook(webhook_id: PathId, session: SessionDep, team: CurrentTeam) -> Webhook:
    hook = session.scalar(
        select(Webhook).where(Webhook.id == webhook_id, Webhook.team_id == team.id)
    )
    if hook is None:
        raise not_found("webhook", webhook_id, param="webhook_id")
    return hook


WebhookDep = Annotated[Webhook, Depends(get_webhook)]
