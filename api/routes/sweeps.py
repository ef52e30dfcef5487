"""`/v1/sweeps`: a family of fine-tuning jobs over replay fractions (plus the no-replay reference
runs of the efficiency fit), and its data-efficiency report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.deps import CurrentTeam, QueueDep, SessionDep, SweepDep
from api.openapi import error_responses
from api.schemas.common import Cursor, IdempotencyKeyHeader, ListResponse
from api.schemas.sweeps import SweepCreate, SweepPublic, SweepReport
from api.services import sweeps as service
from control.settings import get_settings

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


@router.post("", response_model=SweepPublic, responses=error_responses(400, 409, 429))
def create_sweep(
    body: SweepCreate,
    session: SessionDep,
    team: CurrentTeam,
    queue: QueueDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> SweepPublic:
    sweep, created = service.create_sweep(
        session=session,
        team=team,
        body=body,
        settings=get_settings(),
        queue=queue,
        idempotency_key=idempotency_key,
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return service.to_public(session, sweep)


@router.post("/plan", responses=error_responses(400))
def plan_sweep(body: SweepCreate, session: SessionDep, team: CurrentTeam) -> dict[str, Any]:
    """ReplayFT extra: the members a sweep request would launch and their estimated steps,
    checked as the create would check them; nothing is created."""
    return service.plan_sweep(session=session, team=team, body=body, settings=get_settings())


@router.get("", response_model=ListResponse[SweepPublic], responses=error_responses(400))
def list_sweeps(
    session: SessionDep,
    team: CurrentTeam,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListResponse[SweepPublic]:
    sweeps, has_more = service.list_sweeps(session=session, team=team, after=after, limit=limit)
    return ListResponse(data=[service.to_public(session, s) for s in sweeps], has_more=has_more)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=error_responses(404))
def retrieve_sweep(sweep: SweepDep, session: SessionDep) -> SweepPublic:
    return service.to_public(session, sweep)


@router.post("/{sweep_id}/cancel", response_model=SweepPublic, responses=error_responses(404, 409))
def cancel_sweep(sweep: SweepDep, session: SessionDep) -> SweepPublic:
    return service.to_public(session, service.cancel_sweep(session=session, sweep=sweep))


@router.get("/{sweep_id}/report", response_model=SweepReport, responses=error_responses(404))
def sweep_report(sweep: SweepDep, session: SessionDep) -> dict[str, Any]:
    return service.report(session=session, sweep=sweep)
