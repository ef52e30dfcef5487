"""How the client commands print: results to stdout, progress and errors to stderr."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any


def err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def out(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def ts(seconds: int | float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def num(value: Any, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)
