"""Idempotency-Key: a create request repeated with the same key (a client retrying after a lost
answer) returns what the first one made instead of making it again. One key space per team; a key
records what it created (a job or a sweep). Two concurrent requests with one key race on the
key's unique row: the loser rolls back and answers with the winner's object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import APIError
from control.db.models import IdempotencyKey, Job, Sweep, Team

Kind = Literal["job", "sweep"]
_TABLES = {"job": Job, "sweep": Sweep}


def find(*, session: Session, team: Team, key: str, kind: Kind) -> Any | None:
    """What the team's earlier use of `key` created, if anything; a 409 if it created the other
    kind (a key never means two things)."""
    row = session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.team_id == team.id, IdempotencyKey.key == key)
    )
    if row is None:
        return None
    used_for = "job" if row.job_id is not None else "sweep"
    if used_for != kind:
        raise APIError(
            409,
            f"Idempotency-Key {key!r} was already used to create a {used_for}; use a new key "
            f"for this {kind}.",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        )
    table = _TABLES[kind]
    made_id = row.job_id if kind == "job" else row.sweep_id
    return session.scalar(select(table).where(table.id == made_id))


def create_once(
    *, session: Session, team: Team, key: str | None, kind: Kind, make: Callable[[], Any]
) -> tuple[Any, bool]:
    """-> (object, created). `make()` adds the new object's rows to the session (uncommitted);
    they are committed together with the key, or not at all."""
    if key:
        existing = find(session=session, team=team, key=key, kind=kind)
        if existing is not None:
            return existing, False
    try:
        made = make()
        if key:
            session.add(IdempotencyKey(team_id=team.id, key=key, **{f"{kind}_id": made.id}))
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = find(session=session, team=team, key=key, kind=kind) if key else None
        if existing is None:
            raise
        return existing, False
    except BaseException:
        session.rollback()  # nothing half-created
        raise
    return made, True
