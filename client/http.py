"""The HTTP side of the client commands: one `Client` per command, the API's error envelope as
`CLIError`, retries (with Retry-After) only for requests that are safe to repeat, and list
pagination. The API key goes only into the Authorization header and is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


URL_ENV, KEY_ENV = "REPLAYFT_URL", "REPLAYFT_API_KEY"


RETRIES = 4  # attempts for requests that are safe to repeat


RETRY_STATUSES = (429, 502, 503, 504)


class CLIError(Exception):
    """A failure to report as `error: ...` lines (one per line of the message)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url.removesuffix("/v1")


def api_error(status: int, body: Any, text: str = "") -> CLIError:
    """The server's error answer as a CLIError: `param: message`, exit 2 for a rejected request."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        message, param = str(err["message"]), err.get("param")
        if param and not message.startswith(f"{param}:"):
            message = f"{param}: {message}"
    else:
        message, param = f"HTTP {status}: {text.strip()[:300] or 'no details'}", None
    if status in (401, 403):
        return CLIError(f"{message} (HTTP {status}: check --api-key or ${KEY_ENV})", 1)
    if 400 <= status < 500:
        return CLIError(message, 2)
    return CLIError(f"server error (HTTP {status}): {message}", 1)


def _retry_after(headers: Any, attempt: int) -> float:
    try:
        return min(float(headers.get("retry-after", "")), 30.0)
    except ValueError:
        return min(0.25 * 2**attempt, 8.0)


class Client:
    """The `/v1` API with one key. `request` returns parsed JSON or raises CLIError."""

    def __init__(self, url: str, api_key: str):
        try:
            import httpx
        except ImportError:
            raise CLIError("the client commands need httpx: pip install httpx") from None
        self.httpx = httpx
        self.url = normalize_url(url)
        self._http = httpx.Client(
            base_url=self.url + "/v1",
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "replayft-cli"},
            timeout=httpx.Timeout(60.0, connect=10.0),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def _unreachable(self, exc: Exception) -> CLIError:
        reason = str(exc) or type(exc).__name__
        return CLIError(
            f"cannot reach the server at {self.url}: {reason} (is it running? set --url or "
            f"${URL_ENV})",
            1,
        )

    def request(self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any) -> Any:
        """`retry` (default: GET only) repeats transport errors and 429/502/503/504."""
        attempts = RETRIES if (method == "GET" if retry is None else retry) else 1
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            try:
                resp = self._http.request(method, path, **kwargs)
            except self.httpx.TransportError as exc:
                if last:
                    raise self._unreachable(exc) from None
                time.sleep(_retry_after({}, attempt))
                continue
            if resp.status_code in RETRY_STATUSES and not last:
                time.sleep(_retry_after(resp.headers, attempt))
                continue
            break
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            raise api_error(resp.status_code, body, resp.text)
        try:
            return resp.json()
        except ValueError:
            raise CLIError(
                f"{method} {path}: the server at {self.url} answered {resp.status_code} with "
                f"something that is not JSON (is it a ReplayFT server?)"
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def upload(self, path: Path, purpose: str, filename: str | None = None) -> dict[str, Any]:
        """Multipart upload; httpx streams the file from disk in chunks."""
        with open(path, "rb") as f:
            return self.request(
                "POST",
                "/files",
                retry=False,  # the body is a consumed stream; a repeat could also store it twice
                files={"file": (filename or path.name, f, "application/octet-stream")},
                data={"purpose": purpose},
                timeout=self.httpx.Timeout(600.0, connect=10.0),
            )

    def delete_quietly(self, path: str) -> bool:
        try:
            self.request("DELETE", path, retry=True)
            return True
        except CLIError:
            return False

    def sse(self, path: str) -> Iterator[tuple[str, Any]]:
        """(event name, parsed data) frames of a Server-Sent Events stream."""
        # the server sends nothing while a job waits in the queue: a read timeout only means
        # "reconnect", which the caller does
        timeout = self.httpx.Timeout(10.0, read=120.0)
        headers = {"Accept": "text/event-stream"}
        with self._http.stream("GET", path, timeout=timeout, headers=headers) as resp:
            if resp.status_code >= 400:
                resp.read()
                try:
                    body = resp.json()
                except ValueError:
                    body = None
                raise api_error(resp.status_code, body, resp.text)
            name, data = "message", []
            for line in resp.iter_lines():
                if not line:
                    if data:
                        try:
                            yield name, json.loads("\n".join(data))
                        except ValueError:
                            pass  # not ours to interpret
                    name, data = "message", []
                elif line.startswith(":"):
                    continue
                else:
                    key, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if key == "event":
                        name = value
                    elif key == "data":
                        data.append(value)


def client_from_args(args: argparse.Namespace) -> Client:
    url = getattr(args, "url", None) or os.environ.get(URL_ENV) or DEFAULT_URL
    key = getattr(args, "api_key", None) or os.environ.get(KEY_ENV)
    if not key:
        raise CLIError(
            f"no API key: set ${KEY_ENV} or pass --api-key (an admin mints one with "
            f"`replayft keys create --team NAME`)",
            2,
        )
    return Client(url, key)


def list_all(client: Client, path: str, page_size: int = 100) -> Iterator[dict[str, Any]]:
    """Items of a cursor-paginated list, in the server's order (newest first)."""
    after = None
    while True:
        page = client.get(path, limit=page_size, after=after)
        data = page.get("data") or []
        yield from data
        if not page.get("has_more") or not data:
            return
        after = data[-1]["id"]
