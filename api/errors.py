"""One error shape for every failure: `{"error": {"message", "type", "param", "code"}}`.

Services raise `APIError` (with the offending field in `param`); the handlers installed by
`install_error_handlers` also turn FastAPI's own 404/405 and request-validation errors into the
same shape, so clients (the OpenAI SDK among them) always find `error.message`.

A database that cannot be reached (connection refused or dropped: OperationalError,
InterfaceError) or whose pool stays exhausted (TimeoutError) is a 503 with Retry-After, as
`/readyz` answers, so clients back off and retry instead of seeing a 500.

Unexpected exceptions become a bare 500 whose details go only to the log. That is done by an
ASGI middleware (`UnexpectedErrors`) rather than an `Exception` handler: Starlette re-raises after
such a handler has answered, and uvicorn then closes the connection, so the client's next request
on that kept-alive connection was reset. A failure after a response has started (mid-stream) is
re-raised on purpose: closing the connection is the only way to tell the client the body is
incomplete.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.openapi import allow_header, allowed_methods
from replay_engine.spec import field_path

log = logging.getLogger("replayft.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status_code, "api_error")
        self.headers = headers


def not_found(what: str, id: str, param: str | None = None) -> APIError:
    return APIError(404, f"No {what} with id '{id}'.", param=param, code="not_found")


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def error_body(status_code: int, message: str, *, param=None, code=None, type=None) -> dict:
    return {
        "error": {
            "message": message,
            "type": type or _TYPES.get(status_code, "api_error"),
            "param": param,
            "code": code,
        }
    }


def server_busy() -> APIError:
    """503 for a saturated database (load shedding): the client should retry shortly."""
    return APIError(
        503,
        "The service is busy; retry after the delay in the Retry-After header.",
        code="server_busy",
        headers={"Retry-After": "1"},
    )


def error_response(exc: APIError) -> JSONResponse:
    body = error_body(exc.status_code, exc.message, param=exc.param, code=exc.code, type=exc.type)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = exc.headers
        if exc.status_code == 405:  # Starlette's Allow names one route's methods, not the path's
            headers = {"Allow": allow_header(allowed_methods(request.app, request.scope))}
        return JSONResponse(
            error_body(exc.status_code, message), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ())[1:]]  # without the kind ("body", "query")
        if "[key]" in loc:  # a bad key of a mapping: name the mapping, not the client's key
            loc = loc[: loc.index("[key]") - 1]
        # drop pydantic's union-branch labels ("function-after[...]", "list[...]", "int", ...)
        loc = [
            p
            for p in loc
            if "[" not in p
            and p
            not in (
                "float",
                "int",
                "str",
                "constrained-str",
                "constrained-float",
                "constrained-int",
            )
        ]
        # a discriminated union in the `{"type": X, X: {...}}` shape (integrations) labels the
        # branch with its tag X right before the branch's own field X: drop the label
        loc = [p for i, p in enumerate(loc) if i + 1 == len(loc) or loc[i + 1] != p]
        if first.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(str(first.get("ctx", {}).get("discriminator", "type")).strip("'"))
        param = field_path(loc, lists=("evals", "integrations")) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return JSONResponse(
            error_body(400, message, param=param, code="invalid_value"), status_code=400
        )

    @app.exception_handler(sa_exc.TimeoutError)
    async def _pool_exhausted(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database pool exhausted: %s", exc)
        return error_response(server_busy())

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        return error_response(
            APIError(
                503,
                "The database is unavailable; retry after the delay in the Retry-After header.",
                code="database_unavailable",
                headers={"Retry-After": "5"},
            )
        )

    app.add_middleware(UnexpectedErrors)


class UnexpectedErrors:
    """Answers an exception no handler took with the 500 error body, and does not re-raise it,
    so the connection stays usable; see the module docstring."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # mid-stream: uvicorn aborts the connection, the client sees a cut body
            response = JSONResponse(error_body(500, "Internal server error."), status_code=500)
            await response(scope, receive, send)
