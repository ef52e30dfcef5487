"""The model-serving process (`replayft inference`): an internal HTTP service the API forwards
generation requests to (wire format: control/inference.py).

    POST /generate   one request -> newline-delimited JSON events (400 before any if refused)
    GET  /stats      loaded models, memory budget, counters (loads, evictions, batches, ...)
    GET  /healthz

It knows nothing of teams or model ids: the API resolves those and sends what the engine loads
(a preset name, a checkpoint folder). That is also why it must listen only where the API can
reach it and nobody else can (127.0.0.1 by default). Generation runs in the pool's threads
(inference/pool.py), never in the event loop; a client that closes its connection sets its
request's cancel flag, which generation checks after every token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from control.settings import Settings, get_settings
from inference.pool import Job, ModelPool
from replay_engine.generation import (
    MAX_TOP_LOGPROBS,
    Chunk,
    LoadedModel,
    Request,
    RequestError,
    SamplingParams,
    check_request,
    encode_chat,
    encode_text,
)

log = logging.getLogger("replayft.inference")
UNBOUNDED_MAX_TOKENS = 4096  # max_tokens left unset, for a model whose config names no context


class GenerateBody(BaseModel):
    """One generation request, as the API sends it (already validated there)."""

    model: str = Field(description="What the engine loads: a preset or a model folder.")
    gguf_file: str | None = None
    messages: list[dict[str, str]] | None = None  # a chat: rendered with the chat template
    prompt: str | None = None  # or a text to continue
    max_tokens: int | None = Field(None, ge=1, description="None: the rest of the context.")
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = []
    seed: int | None = None
    n: int = Field(1, ge=1, le=128)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param}}
    return JSONResponse(body, status_code=status)


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()


def _chunk_event(chunk: Chunk) -> dict[str, Any]:
    return {"type": "chunk", **asdict(chunk)}


def _prepare(
    loaded: LoadedModel, body: GenerateBody
) -> tuple[list[int], SamplingParams] | JSONResponse:
    """The request's prompt ids and sampling parameters, or the 400 that refuses it."""
    chat = body.messages is not None
    try:
        if chat:
            prompt_ids = encode_chat(loaded, body.messages)
        else:
            prompt_ids = encode_text(loaded, body.prompt or "")
    except Exception as exc:  # noqa: BLE001 - a chat template may raise anything
        return _error(400, f"The prompt cannot be rendered: {exc}", "messages")
    max_tokens = body.max_tokens
    if max_tokens is None:  # OpenAI's chat default: whatever room the context leaves
        context = loaded.context_length
        max_tokens = max(1, context - len(prompt_ids)) if context else UNBOUNDED_MAX_TOKENS
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(s for s in body.stop if s) + (loaded.chat_stop if chat else ()),
        seed=body.seed,
        logprobs=body.logprobs,
    )
    try:
        check_request(loaded, prompt_ids, params)
    except RequestError as exc:
        param = "messages" if chat and exc.param == "prompt" else exc.param
        return _error(400, exc.message, param)
    return prompt_ids, params


def create_app(settings: Settings | None = None, pool: ModelPool | None = None) -> FastAPI:
    settings = settings or get_settings()
    pool = pool or ModelPool(
        settings.serve_memory_bytes,
        device=settings.serve_device,
        window_s=settings.serve_batch_window_ms / 1000,
        max_batch=settings.serve_max_batch,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="ReplayFT model serving (internal)", lifespan=lifespan)
    app.state.pool = pool

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return {
            "memory_budget_bytes": pool.budget_bytes,
            "loaded": pool.loaded(),
            **pool.stats.as_dict(),
        }

    @app.post("/generate", response_model=None)
    async def generate(body: GenerateBody) -> StreamingResponse | JSONResponse:
        try:
            served = await run_in_threadpool(pool.get, body.model, body.gguf_file)
        except (ValueError, OSError) as exc:
            log.warning("cannot load %s: %s", body.model, exc)
            return _error(400, f"The model cannot be loaded: {exc}", "model")
        served.arriving()  # the batch being formed waits while this prompt is prepared
        announced = True
        try:
            prepared = _prepare(served.loaded, body)
            if isinstance(prepared, JSONResponse):
                return prepared
            prompt_ids, params = prepared
            loop = asyncio.get_running_loop()
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            cancel = threading.Event()

            def put(event: dict[str, Any]) -> None:  # from the batch thread
                try:
                    loop.call_soon_threadsafe(events.put_nowait, event)
                except RuntimeError:  # the event loop is gone (shutting down)
                    cancel.set()

            def done(error: BaseException | None) -> None:
                error_text = None if error is None else f"generation failed: {error}"
                put({"type": "end", "error": error_text})

            request = Request(
                prompt_ids,
                params,
                body.n,
                emit=lambda chunk: put(_chunk_event(chunk)),
                cancelled=cancel.is_set,
            )
            pool.stats.add(requests=1)
            while not served.submit(Job(request, done), announced=announced):
                announced = False  # unloaded meanwhile: load it again
                served = await run_in_threadpool(pool.get, body.model, body.gguf_file)
            announced = False
        finally:
            if announced:  # refused before it was queued
                served.not_arriving()

        async def stream() -> AsyncIterator[bytes]:
            finished = False
            try:
                yield _line({"type": "start", "prompt_tokens": len(prompt_ids)})
                while True:
                    event = await events.get()
                    yield _line(event)
                    if event["type"] == "end":
                        finished = True
                        return
            finally:
                if not finished:  # the client went away: stop generating for it
                    cancel.set()
                    pool.stats.add(cancelled=1)

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    return app
