"""Teams and API keys. Keys are `rft-` + a random token; only their sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.models import ApiKey, Team

KEY_PREFIX = "rft-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_team(*, session: Session, name: str) -> Team:
    team = session.scalar(select(Team).where(Team.name == name))
    if team is None:
        team = Team(name=name)
        session.add(team)
        session.flush()
    return team


def create_key(*, session: Session, team_name: str, admin: bool = False) -> str:
    """Create the team if needed and a new key for it; returns the key (shown once)."""
    team = get_or_create_team(session=session, name=team_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(team_id=team.id, key_hash=hash_key(key), is_admin=admin))
    session.commit()
    return key


def team_for_key(*, session: Session, key: str) -> tuple[Team, ApiKey] | None:
    row = session.execute(
        select(Team, ApiKey)
        .join(ApiKey, ApiKey.team_id == Team.id)
        .where(ApiKey.key_hash == hash_key(key))
    ).first()
    return (row[0], row[1]) if row else None
