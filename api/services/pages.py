"""Cursor pagination, OpenAI's way: newest first, `after` = the id of the last item of the previous
page, `has_more` when another page follows. One function for every list (files, jobs, sweeps, a
job's events and checkpoints)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.errors import invalid


def after_cursor(
    query: Select,
    *,
    session: Session,
    model: Any,
    order: Any,
    scope: Any,
    after: str | None,
    what: str,
) -> Select:
    """`query` (rows of `model` within `scope`, a condition) limited to rows after the one with id
    `after` in `order`, newest first; a 400 naming `after` if that row is not in the scope."""
    if after:
        anchor = session.scalar(select(order).where(model.id == after, scope))
        if anchor is None:
            raise invalid(f"No {what} with id '{after}' to list after.", "after")
        query = query.where(order < anchor)
    return query.order_by(order.desc())


def page(
    session: Session,
    query: Select,
    *,
    model: Any,
    order: Any,
    scope: Any,
    after: str | None,
    limit: int,
    what: str,
) -> tuple[list[Any], bool]:
    """One page of `query`: (rows, has_more)."""
    query = after_cursor(
        query, session=session, model=model, order=order, scope=scope, after=after, what=what
    )
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
