"""Webhook schemas: the create body, the webhook object (its secret only in the create answer),
and a delivery of the delivery log."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import db_string

WebhookEventType = Literal[
    "fine_tuning.job.succeeded",
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
    "fine_tuning.job.checkpoint.created",
    "sweep.completed",
]
DeliveryStatus = Literal["pending", "delivered", "failed"]


class WebhookCreate(BaseModel):
    # ReplayFT's own endpoint: a misspelt field is refused, not ignored
    model_config = ConfigDict(extra="forbid")

    url: db_string(2048) = Field(
        description="Where events are posted: an http:// or https:// URL the workers can reach, "
        "on a public address (or in the deployment's webhook_allowed_networks)."
    )
    # plain strings here, checked by the service, so an unknown one is a 400 naming `events[i]`
    events: list[db_string(64)] = Field(
        min_length=1,
        max_length=20,
        description="Event types to receive: fine_tuning.job.succeeded, fine_tuning.job.failed, "
        "fine_tuning.job.cancelled, fine_tuning.job.checkpoint.created (every checkpoint), "
        "sweep.completed.",
    )
    description: db_string(500) | None = Field(None, description="A label, for people.")
    enabled: bool = Field(True, description="A disabled webhook records no deliveries.")


class WebhookUpdate(BaseModel):
    """The fields to change; those left out keep their values (the secret never changes)."""

    model_config = ConfigDict(extra="forbid")

    url: db_string(2048) | None = Field(
        None, description=WebhookCreate.model_fields["url"].description
    )
    events: list[db_string(64)] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description=WebhookCreate.model_fields["events"].description,
    )
    description: db_string(500) | None = Field(
        None, description="A label, for people; null clears it."
    )
    enabled: bool | None = Field(
        None,
        description="false: no deliveries are recorded for new events, and those still pending "
        "wait (sent once it is enabled again, within their retry period).",
    )


class WebhookPublic(BaseModel):
    id: str
    object: Literal["webhook"] = "webhook"
    url: str
    events: list[WebhookEventType]
    description: str | None
    enabled: bool
    created_at: int


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="The signing secret (`whsec_` + base64), shown only in this answer: "
        "verify each delivery's `webhook-signature` with it (Standard Webhooks)."
    )


class WebhookDeliveryPublic(BaseModel):
    id: str
    object: Literal["webhook.delivery"] = "webhook.delivery"
    webhook_id: str
    event_id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    event_type: WebhookEventType
    status: DeliveryStatus
    attempts: int
    created_at: int
    next_attempt_at: int | None = Field(description="When it is sent next; null unless pending.")
    last_attempt_at: int | None
    last_status_code: int | None = Field(description="The receiver's last HTTP status, if any.")
    last_error: str | None
    delivered_at: int | None
    payload: dict[str, Any] = Field(description="The event, as the body posted.")
