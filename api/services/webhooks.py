"""A team's webhooks and their delivery log. Recording and sending events is control.webhooks'
and worker.webhooks' work; this module manages the subscriptions and shows what was sent."""

from __future__ import annotations

import json
import time

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.errors import invalid, not_found
from api.schemas.webhooks import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhookUpdate,
)
from api.services.pages import page
from control.db.models import Team, Webhook, WebhookDelivery
from control.settings import Settings
from control.webhooks import EVENT_TYPES, DestinationRefused, new_secret, receiver_addresses


def check_url(url: str, settings: Settings) -> str:
    """An absolute http(s) URL with a host, as the sender (httpx) will read it, whose host does
    not resolve to an address the sender would refuse (control.webhooks); else a 400. A host
    that does not resolve yet passes: the sender checks again before every attempt."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise invalid(f"url: not a valid URL ({exc}).", "url") from None
    if parsed.scheme not in ("http", "https"):
        raise invalid("url: must start with http:// or https://.", "url")
    if not parsed.host:
        raise invalid("url: names no host.", "url")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise invalid(f"url: port {parsed.port} is out of range.", "url")
    if any(c.isspace() for c in url):
        raise invalid("url: must not contain spaces.", "url")
    try:
        receiver_addresses(parsed.host, settings.webhook_allowed_networks)
    except DestinationRefused as exc:
        raise invalid(f"url: {parsed.host} {exc}.", "url") from None
    except (OSError, UnicodeError):
        pass  # does not resolve (yet)
    return url


def check_events(events: list[str]) -> list[str]:
    """The event types, each once, in the order given; an unknown one is a 400 naming it."""
    for i, name in enumerate(events):
        if name not in EVENT_TYPES:
            raise invalid(
                f"events[{i}]: unknown event type {name!r}; one of {', '.join(EVENT_TYPES)}.",
                f"events[{i}]",
            )
    return list(dict.fromkeys(events))


def create_webhook(
    *, session: Session, team: Team, body: WebhookCreate, settings: Settings
) -> WebhookCreated:
    hook = Webhook(
        team_id=team.id,
        url=check_url(body.url, settings),
        events=check_events(body.events),
        description=body.description,
        enabled=body.enabled,
        secret=new_secret(),
    )
    session.add(hook)
    session.commit()
    return WebhookCreated(**to_public(hook).model_dump(), secret=hook.secret)


def list_webhooks(
    *, session: Session, team: Team, after: str | None, limit: int
) -> tuple[list[Webhook], bool]:
    scope = Webhook.team_id == team.id
    return page(
        session,
        select(Webhook).where(scope),
        model=Webhook,
        order=Webhook.pk,
        scope=scope,
        after=after,
        limit=limit,
        what="webhook",
    )


def update_webhook(
    *, session: Session, hook: Webhook, body: WebhookUpdate, settings: Settings
) -> Webhook:
    """Change the fields the request names, each checked as on create; null is a 400 for any
    but `description`."""
    given = body.model_fields_set
    for name in ("url", "events", "enabled"):
        if name in given and getattr(body, name) is None:
            raise invalid(f"{name}: must not be null (leave it out to keep it).", name)
    if "url" in given:
        hook.url = check_url(body.url, settings)
    if "events" in given:
        hook.events = check_events(body.events)
    if "description" in given:
        hook.description = body.description
    if "enabled" in given:
        hook.enabled = body.enabled
    session.commit()
    return hook


def delete_webhook(*, session: Session, hook: Webhook) -> None:
    """The webhook and its delivery log; deliveries not yet sent are never sent."""
    session.delete(hook)
    session.commit()


def list_deliveries(
    *, session: Session, hook: Webhook, status: str | None, after: str | None, limit: int
) -> tuple[list[WebhookDelivery], bool]:
    scope = WebhookDelivery.webhook_id == hook.id
    query = select(WebhookDelivery).where(scope)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return page(
        session,
        query,
        model=WebhookDelivery,
        order=WebhookDelivery.pk,
        scope=scope,
        after=after,
        limit=limit,
        what="delivery of this webhook",
    )


def get_delivery(*, session: Session, hook: Webhook, delivery_id: str) -> WebhookDelivery:
    delivery = session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == hook.id
        )
    )
    if delivery is None:
        raise not_found("delivery of this webhook", delivery_id, param="delivery_id")
    return delivery


def redeliver(*, session: Session, hook: Webhook, delivery_id: str) -> WebhookDelivery:
    """Send the event again, now, under the same `webhook-id` and body, whatever its status; it
    is retried for `webhook_retry_for` from now if the receiver does not take it."""
    delivery = get_delivery(session=session, hook=hook, delivery_id=delivery_id)
    at = time.time()
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.pk == delivery.pk)
        .values(status="pending", next_attempt_at=at, pending_since=at)
    )
    session.commit()
    session.refresh(delivery)
    return delivery


def to_public(hook: Webhook) -> WebhookPublic:
    return WebhookPublic(
        id=hook.id,
        url=hook.url,
        events=hook.events,
        description=hook.description,
        enabled=hook.enabled,
        created_at=hook.created_at,
    )


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def delivery_to_public(delivery: WebhookDelivery) -> WebhookDeliveryPublic:
    pending = delivery.status == "pending"
    return WebhookDeliveryPublic(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempts=delivery.attempts,
        created_at=int(delivery.created_at),
        next_attempt_at=_seconds(delivery.next_attempt_at) if pending else None,
        last_attempt_at=_seconds(delivery.last_attempt_at),
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        delivered_at=_seconds(delivery.delivered_at),
        payload=json.loads(delivery.payload),
    )
