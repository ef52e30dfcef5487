"""Keeping secrets out of the server's access log.

A checkpoint download link carries its credential in the query string (`?token=...`,
api.services.download_links): a browser's download manager cannot send headers. Uvicorn logs
each request's path with its query, so `RedactSecrets` rewrites the query's secret parameters to
`REDACTED` in every access-log record before any handler formats it."""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = re.compile(r"(?<=[?&])(token|api_key|key)=[^&\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    return SECRET_PARAMS.sub(lambda m: f"{m.group(1)}=REDACTED", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install() -> None:
    """On uvicorn's access logger, once per process."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
