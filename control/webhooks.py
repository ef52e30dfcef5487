"""Webhooks: what happened, told to the teams' own HTTP endpoints.

Recording. Every state change that makes an event (a job succeeded, failed or was cancelled, a
checkpoint saved, the last member of a sweep finished) calls a function here with the session of
that change, before its commit. `record` writes one `webhook_deliveries` row per enabled webhook
of the team that subscribes to the event's type, in that same transaction: the durable outbox of
deliveries. A committed change always has its deliveries and a rolled-back one has none, whoever
made it (the API's cancel, a worker's succeed, the lost-job check's fail) and whatever dies after.

Sending (`worker.webhooks.send_due`, in every worker's maintenance process) claims due rows with
a conditional UPDATE, posts them, and records the outcome: a 2xx is `delivered`; anything else
(another status, a refused connection, a timeout) is retried `webhook_retry_base` seconds later,
then twice that, and so on up to an hour, until `webhook_retry_for` seconds after the event (or
its redelivery), when the row is `failed`. So delivery is at least once: a receiver that answered
2xx but whose answer was lost gets the event again, under the same `webhook-id`.

Signing follows Standard Webhooks (the `standardwebhooks` library, which receivers can use to
verify): headers `webhook-id` (the event id, the same on every attempt), `webhook-timestamp`
(the attempt's time) and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of
`{id}.{timestamp}.{body}` with the webhook's secret, `whsec_` + base64 of 32 random bytes).

Where deliveries may go: `receiver_addresses` resolves a receiver's host and refuses any address
outside the public internet (loopback, private, link-local such as a cloud's metadata service,
shared, reserved, multicast) unless it lies in `webhook_allowed_networks`, so that a team cannot
point the service's own network connections at what only the service can reach. The API checks
when a webhook is created (a name that does not resolve yet is let through), and the sender checks
before every attempt and connects to the very address it checked, so a name that resolves
elsewhere later (DNS rebinding) is caught too.

The body is OpenAI's webhook event shape: `{"id", "object": "event", "type", "created_at",
"data"}`, `data` holding the object the event is about.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from standardwebhooks import Webhook as Signer

from control.db.models import (
    Checkpoint,
    Job,
    Sweep,
    SweepMember,
    Webhook,
    WebhookDelivery,
    new_id,
    now,
)
from control.statuses import TERMINAL_STATUSES, sweep_status

JOB_SUCCEEDED = "fine_tuning.job.succeeded"
JOB_FAILED = "fine_tuning.job.failed"
JOB_CANCELLED = "fine_tuning.job.cancelled"
CHECKPOINT_CREATED = "fine_tuning.job.checkpoint.created"
SWEEP_COMPLETED = "sweep.completed"
EVENT_TYPES = (JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED, CHECKPOINT_CREATED, SWEEP_COMPLETED)
JOB_EVENTS = {"succeeded": JOB_SUCCEEDED, "failed": JOB_FAILED, "cancelled": JOB_CANCELLED}

DELIVERY_STATUSES = ("pending", "delivered", "failed")
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret: str, event_id: str, body: str, at: datetime | None = None) -> dict:
    """The Standard Webhooks headers of one attempt to send `body`."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Signer(secret).sign(event_id, at, body),
    }


# ---------------------------------------------------------------------------- recording
def record(session: Session, *, team_id: str, event_type: str, data: dict[str, Any]) -> str | None:
    """Record the event in `session` (not committed) for every enabled webhook of the team that
    subscribes to `event_type`; -> its id, or None when nobody listens."""
    hooks = session.scalars(
        select(Webhook).where(Webhook.team_id == team_id, Webhook.enabled.is_(True))
    ).all()
    listening = [h for h in hooks if event_type in h.events]
    if not listening:
        return None
    event_id = new_id("evt")
    body = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created_at": now(),
            "data": data,
        },
        separators=(",", ":"),
    )
    for hook in listening:
        session.add(
            WebhookDelivery(
                webhook_id=hook.id, event_id=event_id, event_type=event_type, payload=body
            )
        )
    return event_id


def job_data(job: Job) -> dict[str, Any]:
    """The `data` of a job event: the job's identity and outcome (the full object is one GET
    away, `GET /v1/fine_tuning/jobs/{id}`)."""
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "status": job.status,
        "model": job.model,
        "fine_tuned_model": job.fine_tuned_model,
        "trained_tokens": job.trained_tokens,
        "finished_at": job.finished_at,
        "error": job.error,
        "metadata": job.job_metadata,
    }


def jobs_finished(session: Session, job_ids: list[str]) -> None:
    """Record the events of jobs that have just reached a final status in `session` (their rows
    already changed in it, not committed): one per job, and `sweep.completed` for a sweep whose
    last unfinished member was among them.

    Whether a member was the last is decided under a lock on the sweep's row (PostgreSQL; SQLite
    runs one writer at a time anyway), taken after the job rows changed: of two members finishing
    at once, the second to take the lock sees the first's committed status, so the sweep's event
    is recorded exactly once. Job rows are always locked before sweep rows, so two such
    transactions cannot wait on each other in a circle."""
    session.flush()
    sweeps = set()
    for job_id in job_ids:
        job = session.scalar(
            select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
        )
        if job is None or job.status not in JOB_EVENTS:
            continue
        record(session, team_id=job.team_id, event_type=JOB_EVENTS[job.status], data=job_data(job))
        sweep_id = session.scalar(select(SweepMember.sweep_id).where(SweepMember.job_id == job_id))
        if sweep_id is not None:
            sweeps.add(sweep_id)
    for sweep_id in sorted(sweeps):
        sweep = session.scalar(
            select(Sweep)
            .where(Sweep.id == sweep_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        members = session.execute(
            select(Job.id, Job.status, Job.finished_at)
            .join(SweepMember, SweepMember.job_id == Job.id)
            .where(SweepMember.sweep_id == sweep_id)
            .execution_options(populate_existing=True)
        ).all()
        statuses = [m.status for m in members]
        if any(s not in TERMINAL_STATUSES for s in statuses):
            continue
        counts = {s: statuses.count(s) for s in TERMINAL_STATUSES}
        data = {
            "id": sweep.id,
            "object": "sweep",
            "status": sweep_status(statuses),
            "model": sweep.model,
            "finished_at": max((m.finished_at or 0) for m in members) or None,
            "counts": {"total": len(statuses), **counts},
            "member_job_ids": [m.id for m in members],
            "metadata": sweep.sweep_metadata,
        }
        record(session, team_id=sweep.team_id, event_type=SWEEP_COMPLETED, data=data)


def checkpoint_created(session: Session, team_id: str, checkpoint: Checkpoint) -> None:
    """Record `fine_tuning.job.checkpoint.created` for a checkpoint row added in `session`."""
    session.flush()  # gives the row its id
    data = {
        "id": checkpoint.id,
        "object": "fine_tuning.job.checkpoint",
        "fine_tuning_job_id": checkpoint.job_id,
        "step_number": checkpoint.step_number,
        "fine_tuned_model_checkpoint": checkpoint.fine_tuned_model_checkpoint,
        "metrics": checkpoint.metrics,
        "created_at": checkpoint.created_at,
    }
    record(session, team_id=team_id, event_type=CHECKPOINT_CREATED, data=data)


# ---------------------------------------------------------------------------- where deliveries may go
class DestinationRefused(ValueError):
    """A receiver's host resolves to an address outside the public internet and outside the
    allowed networks."""


def receiver_addresses(host: str, allowed_networks: Sequence[str]) -> list[str]:
    """The addresses `host` resolves to, each public or inside `allowed_networks` (CIDR); raises
    DestinationRefused naming the first that is neither, or socket.gaierror when `host` does not
    resolve."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)  # addresses only, no port
    addresses = list(dict.fromkeys(info[4][0].split("%")[0] for info in infos))  # no v6 scope
    networks = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
    for text in addresses:
        address = ipaddress.ip_address(text)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in networks):
            continue
        if not address.is_global or address.is_multicast or address.is_reserved:
            raise DestinationRefused(
                f"resolves to {text}, which is not a public address (loopback, private, "
                f"link-local, reserved or multicast) and not in webhook_allowed_networks"
            )
    return addresses
