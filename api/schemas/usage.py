"""Usage per team and day (ReplayFT's own; OpenAI's usage API is per organisation)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class UsageDay(BaseModel):
    object: Literal["usage.day"] = "usage.day"
    team_id: str
    team: str
    date: str = Field(description="UTC day, YYYY-MM-DD.")
    jobs_created: int = 0
    jobs_succeeded: int = Field(0, description="Jobs that finished this day, by final status.")
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    trained_tokens: int = Field(0, description="Tokens trained by jobs that succeeded this day.")
    gpu_seconds: float = Field(
        0.0,
        description="Training time x processes (GPUs; a CPU job counts its one process) of jobs "
        "that finished this day, and of running ones so far on today's row.",
    )
