"""How the API reaches the model-serving process (`replayft inference`, inference/server.py).

The API resolves a public model id to what the engine loads (a preset, a checkpoint folder) and
posts one generation request to the serving process's internal `POST /generate`; the answer is
newline-delimited JSON events:

    {"type": "start", "prompt_tokens": 12}
    {"type": "chunk", "index": 0, "text": "...", "logprobs": [...], "finish_reason": null, ...}
    ... one chunk per text increment; each choice's last chunk has finish_reason and
    completion_tokens ...
    {"type": "end"}

A request the serving process refuses (a prompt or max_tokens that do not fit the model, a model
that does not load) is an HTTP 400 with the API's error body, before any event. Closing the
response early (the API's client went away) makes the serving process stop generating.

`Inference` is what routes are given (api.deps.InferenceDep), so tests can fake it at this
boundary; `HttpInference` is the real one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx


class InferenceError(Exception):
    """The serving process refused a request (status 400, `param` names the field) or could not
    be reached (status 503)."""

    def __init__(self, status_code: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status_code, self.message, self.param = status_code, message, param


class Inference(Protocol):
    def generate(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The events of one generation request; raises InferenceError before the first one if
        the request is refused. Closing the iterator early cancels the generation."""
        ...


class HttpInference:
    """The serving process over HTTP at `url` (settings.inference_url)."""

    def __init__(self, url: str, timeout: float = 600.0):
        self.url = url.rstrip("/")
        # no read timeout between events beyond `timeout`: a long batch may keep a stream quiet
        self.timeout = httpx.Timeout(timeout, connect=10.0)

    async def generate(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            try:
                async with client.stream("POST", f"{self.url}/generate", json=request) as resp:
                    if resp.status_code != 200:
                        raise _refusal(resp.status_code, await resp.aread())
                    async for line in resp.aiter_lines():
                        if line:
                            yield json.loads(line)
            except httpx.TransportError as exc:
                raise InferenceError(
                    503,
                    f"The model-serving process at {self.url} cannot be reached ({exc!r}); "
                    f"start it with `replayft inference` (`replayft serve` starts one itself).",
                ) from exc


def _refusal(status_code: int, body: bytes) -> InferenceError:
    try:
        error = json.loads(body)["error"]
        return InferenceError(status_code, error["message"], error.get("param"))
    except (ValueError, KeyError, TypeError):
        text = body.decode(errors="replace")[:500]
        return InferenceError(status_code, f"The model-serving process answered {text!r}.")
