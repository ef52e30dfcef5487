"""File objects: OpenAI's fields plus `status_details` and `stats` (format, examples, tokens)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

PURPOSES = ("fine-tune", "replay", "evals")
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


class FilePreview(BaseModel):
    """The first records of a file, as stored (long strings cut), with its validation stats."""

    object: Literal["file.preview"] = "file.preview"
    id: str
    filename: str
    rows: list[Any] = Field(description="The first records: JSON objects, or lines of text.")
    truncated: bool = Field(description="True when the file has more than these rows.")
    stats: dict[str, Any] | None = None


class FileDownloadLink(BaseModel):
    """ReplayFT extra: a URL that downloads the file's content without an Authorization header,
    for a browser's own download; it holds no API key and stops working at `expires_at`."""

    object: Literal["file.download_link"] = "file.download_link"
    url: str
    expires_at: int
