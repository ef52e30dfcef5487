"""`/v1/webhooks`: a team's webhook endpoints (job and sweep events, signed the Standard Webhooks
way) and each one's delivery log, with redelivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentTeam, SessionDep, WebhookDep
from api.openapi import error_responses
from api.schemas.common import Cursor, DeletedResponse, ListResponse, PathId
from api.schemas.webhooks import (
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhookUpdate,
)
from api.services import webhooks as service
from control.settings import get_settings

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post("", response_model=WebhookCreated, responses=error_responses(400))
def create_webhook(body: WebhookCreate, session: SessionDep, team: CurrentTeam) -> WebhookCreated:
    """The answer holds the signing `secret`; it is never shown again."""
    return service.create_webhook(session=session, team=team, body=body, settings=get_settings())


@router.get("", response_model=ListResponse[WebhookPublic], responses=error_responses(400))
def list_webhooks(
    session: SessionDep,
    team: CurrentTeam,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListResponse[WebhookPublic]:
    hooks, has_more = service.list_webhooks(session=session, team=team, after=after, limit=limit)
    return ListResponse(data=[service.to_public(h) for h in hooks], has_more=has_more)


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=error_responses(404))
def retrieve_webhook(hook: WebhookDep) -> WebhookPublic:
    return service.to_public(hook)


@router.patch("/{webhook_id}", response_model=WebhookPublic, responses=error_responses(400, 404))
def update_webhook(hook: WebhookDep, body: WebhookUpdate, session: SessionDep) -> WebhookPublic:
    """Change its URL, events, description or whether it is enabled; the secret stays."""
    hook = service.update_webhook(session=session, hook=hook, body=body, settings=get_settings())
    return service.to_public(hook)


@router.delete("/{webhook_id}", response_model=DeletedResponse, responses=error_responses(404))
def delete_webhook(hook: WebhookDep, session: SessionDep) -> DeletedResponse:
    service.delete_webhook(session=session, hook=hook)
    return DeletedResponse(id=hook.id, object="webhook", deleted=True)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=ListResponse[WebhookDeliveryPublic],
    responses=error_responses(400, 404),
)
def list_deliveries(
    hook: WebhookDep,
    session: SessionDep,
    status: DeliveryStatus | None = None,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListResponse[WebhookDeliveryPublic]:
    """The delivery log, newest first: each event sent to this webhook, its status, attempts and
    last error."""
    rows, has_more = service.list_deliveries(
        session=session, hook=hook, status=status, after=after, limit=limit
    )
    return ListResponse(data=[service.delivery_to_public(d) for d in rows], has_more=has_more)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=WebhookDeliveryPublic,
    responses=error_responses(404),
)
def redeliver(hook: WebhookDep, delivery_id: PathId, session: SessionDep) -> WebhookDeliveryPublic:
    """Send the event again now, with the same `webhook-id` and body, whatever its status."""
    delivery = service.redeliver(session=session, hook=hook, delivery_id=delivery_id)
    return service.delivery_to_public(delivery)
