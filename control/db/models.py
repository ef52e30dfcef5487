"""ORM models: what the service stores. Schemas for the HTTP API live apart, in `api.schemas`.

Every public object has a string id with an OpenAI-style prefix (`file-`, `ftjob-`, ...) and an
integer `pk` that only orders rows: lists are newest first and the `after` cursor becomes
`pk < after.pk`, which is exact even when many rows share a `created_at` second.

Job state that the worker and the API both touch:
- `status` is the public state; `control` is a pending request from the API (`cancel`, `pause`)
  that the worker's hooks act on between steps.
- `lease_owner` + `heartbeat_at` say which worker holds a running job and when it last showed
  life; a job is claimed only with an atomic UPDATE that checks them (see worker.runner).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from control.db.base import Base


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


class Team(Base):
    __tablename__ = "teams"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("org"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    # the team's own limits (control.limits); None = the deployment's default from settings
    max_running_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_gpu_hours: Mapped[float | None] = mapped_column(Float, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("key"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; never the key
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)  # a label, optional
    prefix: Mapped[str | None] = mapped_column(String(16), nullable=True)  # shown, not secret
    last_used_at: Mapped[int | None] = mapped_column(Integer, nullable=True)  # to the minute
    revoked_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class File(Base):
    __tablename__ = "files"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("file"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)  # 64-bit: limits past 2 GiB
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="uploaded")
    status_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class Model(Base):
    """A server-side registration by an admin: a base model (`kind="base"`, `paths[0]` is a model
    folder or GGUF file) or a replay corpus (`kind="corpus"`, `paths` are data files)."""

    __tablename__ = "models"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    paths: Mapped[list[str]] = mapped_column(JSON)
    gguf_file: Mapped[str | None] = mapped_column(String(300), nullable=True)
    owned_by: Mapped[str] = mapped_column(String(200), default="system")
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class Job(Base):
    __tablename__ = "jobs"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("ftjob"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(32), default="validating_files", index=True)
    model: Mapped[str] = mapped_column(String(500))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # within a team
    job_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    # the request as the client sent it (echoed back) and the engine spec it resolved to
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    method: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    replay_request: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    evals_request: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # experiment trackers as requested ({"type": "wandb", "wandb": {...}}, ...); no credentials
    integrations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    final_checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    artifact_dir: Mapped[str] = mapped_column(Text)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # past 2^31
    estimated_finish: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    started_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # worker coordination
    control: Mapped[str | None] = mapped_column(String(16), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class JobEvent(Base):
    __tablename__ = "job_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("ftevent"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16), default="message")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class JobNode(Base):
    """One machine of a multi-machine job's run. The worker that claimed the job (its lease
    owner, the `leader`) is node 0 and hosts the rendezvous; each other node is a worker that
    took one of its `run_node` tasks. The unique (job, leader, node) row is that worker's claim,
    so a redelivered task cannot start a second copy of the same node, and a task from an
    earlier run of the job (another leader) is recognised as stale."""

    __tablename__ = "job_nodes"
    __table_args__ = (UniqueConstraint("job_id", "leader", "node_rank"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    leader: Mapped[str] = mapped_column(String(200))
    node_rank: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="joined")  # joined|finished|failed
    joined_at: Mapped[int] = mapped_column(Integer, default=now)
    finished_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class JobMetric(Base):
    """One engine metrics record (train, eval or summary), stored whole as JSON."""

    __tablename__ = "job_metrics"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(16))
    record: Mapped[dict[str, Any]] = mapped_column(JSON)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step_number"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("ftckpt"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step_number: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(600))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class IdempotencyKey(Base):
    """A team's Idempotency-Key and what its first request created: a job or a sweep (one of the
    two ids is set). Keys are one space per team, whatever the endpoint."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("team_id", "key"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True
    )
    sweep_id: Mapped[str | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class Sweep(Base):
    """A family of fine-tuning jobs on one model, target and replay data (see api.services.sweeps).
    The request is kept as sent; the member jobs and their roles are `SweepMember` rows."""

    __tablename__ = "sweeps"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("sweep"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(500))
    training_file: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    replay_fractions: Mapped[list[float]] = mapped_column(JSON)
    target_stage2_allocations: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    reference_subsets: Mapped[list[float]] = mapped_column(JSON)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    sweep_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class SweepMember(Base):
    """One job of a sweep and what it stands for: a replay configuration (r, a) on all the target
    data, a no-replay reference run on a nested subset of it, or both (r = 0 on all the data is
    the baseline and the reference curve's largest point)."""

    __tablename__ = "sweep_members"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    replay_fraction: Mapped[float] = mapped_column(Float)
    target_stage2_allocation: Mapped[float | None] = mapped_column(Float, nullable=True)
    target_subset_fraction: Mapped[float] = mapped_column(Float, default=1.0)
    is_configuration: Mapped[bool] = mapped_column(Boolean, default=False)
    is_reference: Mapped[bool] = mapped_column(Boolean, default=False)


class OutboxMessage(Base):
    """A task to be enqueued, written in the same transaction as the row change that calls for
    it, so a committed change can never lose its task (see control.queue). The row stays
    until the task has taken effect on its subject's row; the relay (re)sends it meanwhile."""

    __tablename__ = "outbox"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(100))
    args: Mapped[list[Any]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(String(64), index=True)  # the job or file id
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    due_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Webhook(Base):
    """A team's subscription: events of the types in `events` are posted to `url`, signed with
    `secret` (Standard Webhooks: `whsec_` + base64 of the key). The secret is stored as is
    because every delivery is signed with it; the API shows it once, when the webhook is made."""

    __tablename__ = "webhooks"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("wh"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(500), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class WebhookDelivery(Base):
    """One event for one webhook: the durable outbox of webhook deliveries (control.webhooks).
    Written in the transaction of the state change it reports; sent, and again with a growing
    delay until the receiver answers 2xx or `webhook_retry_for` has passed. `event_id` (the
    `webhook-id` header) and `payload` (the body, exactly as signed) never change, so a receiver
    recognises a retry or a redelivery as the same event."""

    __tablename__ = "webhook_deliveries"
    # the sender's question: pending rows that are due (delivered ones pile up beside them)
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("whdel"))
    webhook_id: Mapped[str] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the JSON body, as signed and sent
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    pending_since: Mapped[float] = mapped_column(Float, default=time.time)  # created or redelivered
    next_attempt_at: Mapped[float] = mapped_column(Float, default=time.time)
    last_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
