"""Teams and API keys. Keys are `rft-` + a random token; only their sha256 is stored, plus the
first 8 characters after `rft-` (`prefix`) so that people can tell their keys apart.

A key's life: created (for a team, admin or not) -> used (`last_used_at`, recorded at most once a
minute so that authentication is not a write per request) -> revoked (`revoked_at`; the next
request with it is a 401). Rotating is revoke + create in one commit, same team and admin flag.
Admin keys are deployment-wide: they manage every team's keys (`/v1/admin/*`) and limits
(control.limits).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from control import scheduling
from control.db.models import ApiKey, Team, now

KEY_PREFIX = "rft-"
SHOWN_CHARS = 8  # of the token after `rft-`: 48 bits of 256, enough to tell keys apart
LAST_USED_RESOLUTION_S = 60


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_team(*, session: Session, name: str) -> Team:
    team = session.scalar(select(Team).where(Team.name == name))
    if team is None:
        team = Team(name=name)
        session.add(team)
        session.flush()
    return team


def create_team(*, session: Session, name: str) -> Team:
    """A new team (409 if the name is taken)."""
    if session.scalar(select(Team.id).where(Team.name == name)) is not None:
        raise APIError(409, f"A team named '{name}' exists.", param="name", code="team_exists")
    team = Team(name=name)
    session.add(team)
    try:
        session.commit()
    except IntegrityError:  # created meanwhile by a concurrent request
        session.rollback()
        raise APIError(
            409, f"A team named '{name}' exists.", param="name", code="team_exists"
        ) from None
    return team


def list_teams(*, session: Session) -> list[Team]:
    return list(session.scalars(select(Team).order_by(Team.pk)))


def _new_key(session: Session, team_id: str, admin: bool, name: str | None) -> tuple[ApiKey, str]:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        team_id=team_id,
        key_hash=hash_key(key),
        is_admin=admin,
        name=name,
        prefix=key[len(KEY_PREFIX) : len(KEY_PREFIX) + SHOWN_CHARS],
    )
    session.add(row)
    return row, key


def create_key_row(
    *, session: Session, team_name: str, admin: bool = False, name: str | None = None
) -> tuple[ApiKey, Team, str]:
    """Create the team if needed and a new key for it: (the row, its team, the key, to be shown
    once)."""
    team = get_or_create_team(session=session, name=team_name)
    row, key = _new_key(session, team.id, admin, name)
    session.commit()
    return row, team, key


def create_key(
    *, session: Session, team_name: str, admin: bool = False, name: str | None = None
) -> str:
    """Create the team if needed and a new key for it; returns the key (shown once)."""
    return create_key_row(session=session, team_name=team_name, admin=admin, name=name)[2]


def team_for_key(*, session: Session, key: str) -> tuple[Team, ApiKey] | None:
    """The team and key row of a key, revoked or not (the caller tells the two apart)."""
    row = session.execute(
        select(Team, ApiKey)
        .join(ApiKey, ApiKey.team_id == Team.id)
        .where(ApiKey.key_hash == hash_key(key))
    ).first()
    return (row[0], row[1]) if row else None


def record_use(*, session: Session, key: ApiKey) -> None:
    """Set `last_used_at` if it is unset or older than a minute: one write per key per minute
    at most, whatever the request rate. The UPDATE's own condition makes concurrent requests
    write once."""
    t = now()
    if key.last_used_at is not None and t - key.last_used_at < LAST_USED_RESOLUTION_S:
        return
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key.id)
        .where(
            or_(
                ApiKey.last_used_at.is_(None),
                ApiKey.last_used_at <= t - LAST_USED_RESOLUTION_S,
            )
        )
        .values(last_used_at=t)
    )
    session.commit()
    key.last_used_at = t


def list_keys(*, session: Session, team_name: str | None = None) -> list[tuple[ApiKey, Team]]:
    """Every key (newest last) with its team, or one team's; revoked keys included."""
    query = select(ApiKey, Team).join(Team, ApiKey.team_id == Team.id).order_by(ApiKey.pk)
    if team_name is not None:
        query = query.where(Team.name == team_name)
    return [(k, t) for k, t in session.execute(query).all()]


def get_key(*, session: Session, key_id: str) -> tuple[ApiKey, Team]:
    row = session.execute(
        select(ApiKey, Team).join(Team, ApiKey.team_id == Team.id).where(ApiKey.id == key_id)
    ).first()
    if row is None:
        raise not_found("API key", key_id, param="key_id")
    return row[0], row[1]


def revoke_key(*, session: Session, key_id: str) -> tuple[ApiKey, Team]:
    """Revoke a key (a no-op on one already revoked: it keeps its first revocation time)."""
    key, team = get_key(session=session, key_id=key_id)
    if key.revoked_at is None:
        key.revoked_at = now()
        session.commit()
    return key, team


def rotate_key(*, session: Session, key_id: str) -> tuple[ApiKey, Team, str]:
    """Revoke a key and create its successor (same team, admin flag and name) in one commit:
    (the new row, its team, the new key, to be shown once). A revoked key cannot be rotated."""
    old, team = get_key(session=session, key_id=key_id)
    # conditional UPDATE: of two concurrent rotations of one key, only one makes a successor
    revoked = session.execute(
        update(ApiKey)
        .where(ApiKey.id == old.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    if revoked.rowcount != 1:
        session.rollback()
        raise APIError(409, f"API key '{key_id}' is revoked.", param="key_id", code="key_revoked")
    row, key = _new_key(session, team.id, old.is_admin, old.name)
    session.commit()
    return row, team, key


def update_limits(*, session: Session, team_id: str, changes: dict[str, Any]) -> Team:
    """Set the team's own limits named in `changes` (None: back to the deployment's default);
    404 for an unknown team. Its queued jobs are offered to the workers again, since a higher
    running limit may let one start now."""
    team = session.scalar(select(Team).where(Team.id == team_id))
    if team is None:
        raise not_found("team", team_id)
    for name, value in changes.items():
        setattr(team, name, value)
    scheduling.wake_team(session, team.id)
    session.commit()
    return team
