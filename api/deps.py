"""Dependencies shared by the routes.

- `SessionDep`: a database session per request.
- `CurrentTeam`: the team owning the `Authorization: Bearer` key (401 otherwise).
- `FileDep`, `JobDep`, `SweepDep`: the row named in the path, if it belongs to the caller's team. Another
  team's id answers 404 exactly like a missing one, so ids never leak across teams.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.models import File, Job, Sweep, Team
from api.db.session import get_sessionmaker
from api.errors import APIError, not_found
from api.schemas.common import PathId
from api.services.teams import team_for_key


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def get_current_team(
    session: SessionDep, authorization: Annotated[str | None, Header()] = None
) -> Team:
    if not authorization:
        raise _unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("Malformed Authorization header: expected 'Bearer <key>'.")
    found = team_for_key(session=session, key=key.strip())
    if found is None:
        raise _unauthorized("Incorrect API key provided.")
    return found[0]


CurrentTeam = Annotated[Team, Depends(get_current_team)]


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
