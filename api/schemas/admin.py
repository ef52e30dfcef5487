"""Admin shapes: teams and API keys (ReplayFT's own; OpenAI has no equivalent)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# printable, no control characters (NUL among them): names are shown in tables and logs
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class TeamCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)


class TeamPublic(BaseModel):
    id: str
    object: Literal["team"] = "team"
    name: str
    created_at: int


class ApiKeyCreate(BaseModel):
    team: str = Field(
        min_length=1, max_length=200, pattern=NAME_PATTERN, description="created if new"
    )
    admin: bool = False
    name: str | None = Field(default=None, max_length=200, pattern=NAME_PATTERN)


class ApiKeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    team_id: str
    team: str
    name: str | None
    prefix: str | None = Field(
        description="the key's first characters, e.g. 'rft-AbCd1234'; null for keys minted "
        "before prefixes were recorded"
    )
    admin: bool
    created_at: int
    last_used_at: int | None = Field(description="to the minute")
    revoked_at: int | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the secret key: shown this once, stored only as a hash")
