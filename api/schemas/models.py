"""Model objects as OpenAI lists them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    pretrained: bool | None = Field(
        None,
        description="ReplayFT extra: false for the presets, which start from random weights; "
        "null where the server does not know.",
    )
    description: str | None = Field(None, description="ReplayFT extra: what the model is.")
