"""`/v1/admin`: teams and API keys, for admin keys only (403 to every other key)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from api.deps import AdminKey, SessionDep
from api.openapi import error_responses
from api.schemas.admin import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    MonthUsage,
    TeamCreate,
    TeamLimits,
    TeamPublic,
    TeamUpdate,
)
from api.schemas.common import ListResponse
from api.services import teams as service
from control.db.models import ApiKey, Team
from control.limits import TEAM_LIMITS, month_usage, team_limits
from control.settings import get_settings

router = APIRouter(prefix="/admin", tags=["admin"], responses=error_responses(403))


def key_public(key: ApiKey, team: Team) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=key.id,
        team_id=team.id,
        team=team.name,
        name=key.name,
        prefix=service.KEY_PREFIX + key.prefix if key.prefix else None,
        admin=key.is_admin,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


def team_public(team: Team, session: Session) -> TeamPublic:
    return TeamPublic(
        id=team.id,
        name=team.name,
        created_at=team.created_at,
        limits=TeamLimits(**{name: getattr(team, name) for name in TEAM_LIMITS}),
        effective_limits=TeamLimits(**team_limits(team, get_settings())),
        month_usage=MonthUsage(**month_usage(session, team.id)),
    )


@router.get("/keys", response_model=ListResponse[ApiKeyPublic])
def list_keys(
    session: SessionDep, _admin: AdminKey, team: str | None = None
) -> ListResponse[ApiKeyPublic]:
    rows = service.list_keys(session=session, team_name=team)
    return ListResponse(data=[key_public(k, t) for k, t in rows])


@router.post("/keys", response_model=ApiKeyCreated, responses=error_responses(400))
def create_key(body: ApiKeyCreate, session: SessionDep, _admin: AdminKey) -> ApiKeyCreated:
    row, team, key = service.create_key_row(
        session=session, team_name=body.team, admin=body.admin, name=body.name
    )
    return ApiKeyCreated(**key_public(row, team).model_dump(), key=key)


@router.delete("/keys/{key_id}", response_model=ApiKeyPublic, responses=error_responses(404))
def revoke_key(key_id: str, session: SessionDep, _admin: AdminKey) -> ApiKeyPublic:
    return key_public(*service.revoke_key(session=session, key_id=key_id))


@router.post(
    "/keys/{key_id}/rotate", response_model=ApiKeyCreated, responses=error_responses(404, 409)
)
def rotate_key(key_id: str, session: SessionDep, _admin: AdminKey) -> ApiKeyCreated:
    row, team, key = service.rotate_key(session=session, key_id=key_id)
    return ApiKeyCreated(**key_public(row, team).model_dump(), key=key)


@router.get("/teams", response_model=ListResponse[TeamPublic])
def list_teams(session: SessionDep, _admin: AdminKey) -> ListResponse[TeamPublic]:
    teams = service.list_teams(session=session)
    return ListResponse(data=[team_public(t, session) for t in teams])


@router.post("/teams", response_model=TeamPublic, responses=error_responses(400, 409))
def create_team(body: TeamCreate, session: SessionDep, _admin: AdminKey) -> TeamPublic:
    return team_public(service.create_team(session=session, name=body.name), session)


@router.patch("/teams/{team_id}", response_model=TeamPublic, responses=error_responses(400, 404))
def update_team(
    team_id: str, body: TeamUpdate, session: SessionDep, _admin: AdminKey
) -> TeamPublic:
    """Set a team's limits: the fields given in `limits` (null: back to the default)."""
    changes = body.limits.model_dump(include=body.limits.model_fields_set)
    team = service.update_limits(session=session, team_id=team_id, changes=changes)
    return team_public(team, session)
