"""Admin shapes: teams and API keys (ReplayFT's own; OpenAI has no equivalent)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# printable, no control characters (NUL among them): names are shown in tables and logs
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class TeamCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)


class TeamLimits(BaseModel):
    """A team's share of the pool (control.limits); null = no limit of the team's own, the
    deployment's default (REPLAYFT_TEAM_*) applies."""

    model_config = ConfigDict(extra="forbid")

    max_running_jobs: int | None = Field(
        None, ge=1, le=1_000_000, description="Its jobs training at once; more wait queued."
    )
    max_queued_jobs: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Its jobs waiting (validating_files, queued, paused); more are refused (429).",
    )
    monthly_tokens: int | None = Field(
        None, ge=1, le=2**62, description="Tokens trained per UTC month; then 429 until it ends."
    )
    monthly_gpu_hours: float | None = Field(
        None,
        gt=0,
        le=1e9,
        allow_inf_nan=False,
        description="GPU-hours (training time x processes) per UTC month; then 429 until it ends.",
    )


class MonthUsage(BaseModel):
    tokens: int
    gpu_hours: float


class TeamPublic(BaseModel):
    id: str
    object: Literal["team"] = "team"
    name: str
    created_at: int
    limits: TeamLimits = Field(description="the team's own limits (null: the default applies)")
    effective_limits: TeamLimits = Field(description="what applies: its own, else the default")
    month_usage: MonthUsage = Field(description="what counts against the monthly limits now")


class TeamUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limits: TeamLimits = Field(
        description="the limits to change: a field given is set (null: back to the default), "
        "one left out is kept"
    )


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
