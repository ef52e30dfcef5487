"""Model objects as OpenAI lists them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
