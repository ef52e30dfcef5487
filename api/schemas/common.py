"""Shapes shared by every resource: the error body, list envelopes, and the string and id
types that a database column can hold."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Header, Path, Query
from pydantic import AfterValidator, BaseModel, Field

T = TypeVar("T")

ID_MAX_LENGTH = 64  # every public id column is String(64)


def storable(value: str) -> str:
    """PostgreSQL text cannot hold NUL: refuse it here instead of failing at the query. (A lone
    UTF-16 surrogate, JSON "\\ud800", which no database can encode, is refused by pydantic for
    any string with a max_length, as every stored one has; URL decoding replaces it.)"""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\x00) characters")
    return value


def storable_or_none(value: str | None) -> str | None:
    return None if value is None else storable(value)


def db_string(max_length: int) -> Any:
    """A string a database column of `max_length` characters can store."""
    return Annotated[str, Field(max_length=max_length), AfterValidator(storable)]


# Path and query parameters naming a stored row; declared once so every route bounds them alike.
PathId = Annotated[str, Path(max_length=ID_MAX_LENGTH), AfterValidator(storable)]
Cursor = Annotated[
    str | None,
    Query(max_length=ID_MAX_LENGTH, description="The id of the last item of the previous page."),
    AfterValidator(storable_or_none),
]
IdempotencyKeyHeader = Annotated[  # the idempotency_keys.key column
    str | None, Header(alias="Idempotency-Key", max_length=255), AfterValidator(storable_or_none)
]
Step = Annotated[int | None, Query(ge=-(2**31), lt=2**31, description="An optimizer step.")]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ListResponse(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


class DeletedResponse(BaseModel):
    id: str
    object: str
    deleted: bool = True
