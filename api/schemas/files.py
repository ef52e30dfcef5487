"""File objects: OpenAI's fields plus `status_details` and `stats` (format, examples, tokens)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

PURPOSES = ("fine-tune", "replay")
FILENAME_MAX_LENGTH = 500  # files.filename


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    stats: dict[str, Any] | None = None
