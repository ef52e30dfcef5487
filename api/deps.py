"""Dependencies shared by the routes.

- `SessionDep`: a database session per request.
- `CurrentKey`: the `Authorization: Bearer` key's row (401 if missing, unknown or revoked);
  `CurrentTeam`: the team owning it; `AdminKey`: the key, if it is an admin key (403 otherwise).
- `FileDep`, `JobDep`, `SweepDep`: the row named in the path, if it belongs to the caller's team. Another
  team's id answers 404 exactly like a missing one, so ids never leak across teams.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.models import ApiKey, File, Job, Sweep, Team
from api.db.session import get_sessionmaker
from api.errors import APIError, not_found
from api.services.teams import record_use, team_for_key


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


# documents the Bearer scheme in OpenAPI; the header itself is read below, so that a missing and
# a malformed one get their own messages
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer rft-...`")


def get_caller(
    request: Request,
    session: SessionDep,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> tuple[Team, ApiKey]:
    authorization = request.headers.get("authorization")
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


def get_file(file_id: str, session: SessionDep, team: CurrentTeam) -> File:
    file = session.scalar(select(File).where(File.id == file_id, File.team_id == team.id))
    if file is None:
        raise not_found("file", file_id, param="file_id")
    return file


FileDep = Annotated[File, Depends(get_file)]


def get_job(job_id: str, session: SessionDep, team: CurrentTeam) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.team_id == team.id))
    if job is None:
        raise not_found("fine-tuning job", job_id, param="fine_tuning_job_id")
    return job


JobDep = Annotated[Job, Depends(get_job)]


def get_sweep(sweep_id: str, session: SessionDep, team: CurrentTeam) -> Sweep:
    sweep = session.scalar(select(Sweep).where(Sweep.id == sweep_id, Sweep.team_id == team.id))
    if sweep is None:
        raise not_found("sweep", sweep_id, param="sweep_id")
    return sweep


SweepDep = Annotated[Sweep, Depends(get_sweep)]
