"""`GET /v1/usage`: a team's usage per day; admin keys may ask for any team or all of them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import CurrentKey, CurrentTeam, SessionDep
from api.errors import APIError, invalid
from api.openapi import error_responses
from api.schemas.admin import NAME_PATTERN
from api.schemas.common import ListResponse
from api.schemas.usage import UsageDay
from api.services import usage as service
from control.db.models import Team

router = APIRouter(tags=["usage"])

MAX_DAYS = 366
FIRST_DAY, LAST_DAY = dt.date(1970, 1, 1), dt.date(2099, 12, 31)  # timestamps fit 32 bits


@router.get(
    "/usage", response_model=ListResponse[UsageDay], responses=error_responses(400, 403, 404)
)
def get_usage(
    session: SessionDep,
    team: CurrentTeam,
    key: CurrentKey,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
    team_name: Annotated[str | None, Query(max_length=200, pattern=NAME_PATTERN)] = None,
) -> ListResponse[UsageDay]:
    """Jobs created and finished, trained tokens and GPU-seconds per UTC day, from
    `start_date` (default: 30 days before `end_date`) to `end_date` (default: today). Without
    `team_name` the caller's team; an admin key may name another team, or `*` for every team."""
    end = end_date or dt.datetime.now(dt.UTC).date()
    if not FIRST_DAY <= end <= LAST_DAY:  # before the default start is computed from it
        raise invalid(f"end_date: between {FIRST_DAY} and {LAST_DAY}.", "end_date")
    start = start_date or max(FIRST_DAY, end - dt.timedelta(days=30))
    if not FIRST_DAY <= start <= LAST_DAY:
        raise invalid(f"start_date: between {FIRST_DAY} and {LAST_DAY}.", "start_date")
    if start > end:
        raise invalid("start_date: after end_date.", "start_date")
    if (end - start).days >= MAX_DAYS:
        raise invalid(f"start_date: at most {MAX_DAYS} days at once.", "start_date")
    teams = [team]
    if team_name is not None and team_name != team.name:
        if not key.is_admin:
            raise APIError(
                403, "Only an admin key sees another team's usage.", code="admin_key_required"
            )
        query = select(Team) if team_name == "*" else select(Team).where(Team.name == team_name)
        teams = list(session.scalars(query))
        if not teams:
            raise APIError(404, f"No team named {team_name!r}.", param="team_name")
    rows = service.usage(session=session, teams=teams, start=start, end=end)
    return ListResponse(data=[UsageDay(**r) for r in rows])
