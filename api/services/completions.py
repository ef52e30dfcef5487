"""Chat and text completions: a request becomes one or more generation requests to the
model-serving process (control.inference), whose events become OpenAI's response or its SSE
chunks.

`start` sends the requests and waits for each one's first event, so that a refusal (a context
too small for max_tokens, a model that does not load, no serving process) is an error response
with its status and not a broken stream. A completion with several prompts sends one request per
prompt; the serving process batches them together.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from api.errors import APIError, error_body
from api.schemas.completions import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
)
from control.inference import Inference, InferenceError


def chat_request(body: ChatCompletionRequest, target: str, gguf_file: str | None) -> dict:
    """The serving process's request for a chat completion (`developer` is OpenAI's newer name
    for `system`)."""
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in body.messages
    ]
    top = body.top_logprobs or 0
    return {
        "model": target,
        "gguf_file": gguf_file,
        "messages": messages,
        "max_tokens": body.limit(),
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stop": body.stop_list(),
        "seed": body.seed,
        "n": body.n,
        "logprobs": top if body.logprobs else None,
    }


def text_requests(body: CompletionRequest, target: str, gguf_file: str | None) -> list[dict]:
    return [
        {
            "model": target,
            "gguf_file": gguf_file,
            "prompt": prompt,
            "max_tokens": body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "stop": body.stop_list(),
            "seed": body.seed,
            "n": body.n,
            "logprobs": body.logprobs,
        }
        for prompt in body.prompts()
    ]


@dataclass
class Generation:
    """Running generation requests: their prompt sizes, and their events merged in arrival
    order, each chunk's `index` shifted so that prompt i's choices are i * n .. i * n + n - 1."""

    streams: list[AsyncIterator[dict[str, Any]]]
    prompt_tokens: int
    n: int
    _queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Chunks, then one {"type": "end", "error": ...} once every request has ended."""

        async def pump(offset: int, stream: AsyncIterator[dict[str, Any]]) -> None:
            try:
                async for event in stream:
                    if event["type"] == "chunk":
                        event["index"] += offset
                    await self._queue.put(event)
            except InferenceError as exc:
                await self._queue.put({"type": "end", "error": exc.message})

        self._tasks = [asyncio.create_task(pump(i * self.n, s)) for i, s in enumerate(self.streams)]
        ended, error = 0, None
        while ended < len(self._tasks):
            event = await self._queue.get()
            if event["type"] == "end":
                ended += 1
                error = error or event.get("error")
            elif event["type"] == "chunk":
                yield event
        yield {"type": "end", "error": error}

    async def aclose(self) -> None:
        """Stop every request (the serving process cancels a request whose stream closes)."""
        for task in self._tasks:
            task.cancel()
        # a cancelled pump leaves its stream's `async with` (closing the connection) on its way out
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in self.streams:
            await stream.aclose()  # type: ignore[attr-defined]  # one never iterated


async def start(inference: Inference, requests: list[dict], n: int) -> Generation:
    streams = [inference.generate(r) for r in requests]
    prompt_tokens = 0
    try:
        for stream in streams:
            first = await anext(stream)
            prompt_tokens += first["prompt_tokens"]
    except InferenceError as exc:
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
        if exc.status_code == 503:
            raise APIError(
                503, exc.message, code="inference_unavailable", headers={"Retry-After": "5"}
            ) from None
        raise APIError(
            exc.status_code, exc.message, param=exc.param, code="invalid_value"
        ) from None
    return Generation(streams, prompt_tokens, n)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _generation_failed(message: str) -> APIError:
    return APIError(500, message, code="generation_failed")


# ---------------------------------------------------------------------------- whole responses
@dataclass
class _Collected:
    text: str = ""
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "length"
    completion_tokens: int = 0


async def _collect(generation: Generation, choices: int) -> list[_Collected]:
    out = [_Collected() for _ in range(choices)]
    async for event in generation.events():
        if event["type"] == "end":
            if event["error"]:
                raise _generation_failed(event["error"])
            break
        choice = out[event["index"]]
        choice.text += event["text"]
        choice.logprobs += event["logprobs"]
        if event["finish_reason"]:
            choice.finish_reason = event["finish_reason"]
            choice.completion_tokens = event["completion_tokens"]
    return out


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _chat_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            {**one(e["token"], e["logprob"]), "top_logprobs": [one(t, lp) for t, lp in e["top"]]}
            for e in entries
        ]
    }


def _text_logprobs(entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [dict(e["top"]) for e in entries],
        "text_offset": offsets,
    }


def _response(
    prefix: str,
    model: str,
    generation: Generation,
    choices: list[_Collected],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """The envelope both endpoints share: id, created, model, the choices, usage."""
    completion_tokens = sum(c.completion_tokens for c in choices)
    return {
        "id": new_id(prefix),
        "created": int(time.time()),
        "model": model,
        "choices": rows,
        "usage": _usage(generation.prompt_tokens, completion_tokens),
    }


def _stream_head(prefix: str, kind: str, model: str) -> dict[str, Any]:
    """The fields every SSE chunk of one response repeats."""
    head = {"id": new_id(prefix), "object": kind, "created": int(time.time()), "model": model}
    return head | {"system_fingerprint": None}


async def chat_completion(
    generation: Generation, body: ChatCompletionRequest, model: str
) -> ChatCompletion:
    choices = await _collect(generation, body.n)
    rows = [
        {
            "index": i,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": _chat_logprobs(c.logprobs) if body.logprobs else None,
            "finish_reason": c.finish_reason,
        }
        for i, c in enumerate(choices)
    ]
    return ChatCompletion.model_validate(_response("chatcmpl", model, generation, choices, rows))


async def completion(generation: Generation, body: CompletionRequest, model: str) -> Completion:
    choices = await _collect(generation, body.n * len(body.prompts()))
    rows = [
        {
            "index": i,
            "text": c.text,
            "logprobs": _text_logprobs(c.logprobs, 0) if body.logprobs is not None else None,
            "finish_reason": c.finish_reason,
        }
        for i, c in enumerate(choices)
    ]
    return Completion.model_validate(_response("cmpl", model, generation, choices, rows))


# ---------------------------------------------------------------------------- SSE
def _sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def _sse_error(message: str) -> bytes:
    return _sse(error_body(500, message, code="generation_failed"))


async def chat_chunks(
    generation: Generation, body: ChatCompletionRequest, model: str
) -> AsyncIterator[bytes]:
    """OpenAI's chat.completion.chunk events: each choice opens with the assistant role, then
    content deltas, then an empty delta with its finish_reason; usage last if asked; [DONE]."""
    head = _stream_head("chatcmpl", "chat.completion.chunk", model)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    usage_field = {"usage": None} if include_usage else {}
    completion_tokens = 0

    def chunk(index: int, delta: dict, logprobs=None, finish_reason=None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs}
        return _sse(
            {**head, "choices": [{**choice, "finish_reason": finish_reason}], **usage_field}
        )

    try:
        for i in range(body.n):
            yield chunk(i, {"role": "assistant", "content": ""})
        async for event in generation.events():
            if event["type"] == "end":
                if event["error"]:
                    yield _sse_error(event["error"])
                break
            index = event["index"]
            logprobs = _chat_logprobs(event["logprobs"]) if body.logprobs else None
            if event["text"] or event["logprobs"]:
                yield chunk(index, {"content": event["text"]}, logprobs)
            if event["finish_reason"]:
                completion_tokens += event["completion_tokens"]
                yield chunk(index, {}, finish_reason=event["finish_reason"])
        if include_usage:
            usage = _usage(generation.prompt_tokens, completion_tokens)
            yield _sse({**head, "choices": [], "usage": usage})
        yield _sse("[DONE]")
    finally:
        await generation.aclose()  # a client that went away stops the generation


async def completion_chunks(
    generation: Generation, body: CompletionRequest, model: str
) -> AsyncIterator[bytes]:
    head = _stream_head("cmpl", "text_completion", model)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    usage_field = {"usage": None} if include_usage else {}
    completion_tokens = 0
    offsets: dict[int, int] = {}

    try:
        async for event in generation.events():
            if event["type"] == "end":
                if event["error"]:
                    yield _sse_error(event["error"])
                break
            index = event["index"]
            logprobs = None
            if body.logprobs is not None:
                logprobs = _text_logprobs(event["logprobs"], offsets.get(index, 0))
                offsets[index] = offsets.get(index, 0) + sum(
                    len(e["token"]) for e in event["logprobs"]
                )
            if event["finish_reason"]:
                completion_tokens += event["completion_tokens"]
            choice = {"index": index, "text": event["text"], "logprobs": logprobs}
            choice["finish_reason"] = event["finish_reason"]
            yield _sse({**head, "choices": [choice], **usage_field})
        if include_usage:
            usage = _usage(generation.prompt_tokens, completion_tokens)
            yield _sse({**head, "choices": [], "usage": usage})
        yield _sse("[DONE]")
    finally:
        await generation.aclose()
