"""The OpenAPI document says what the API really answers, and OPTIONS tells what a path allows.

- Every error is the envelope `ErrorResponse` (`{"error": {message, type, param, code}}`).
  Routes declare their errors with `error_responses(404, 409, ...)`; the `/v1` router adds 401
  and 503 to all of them.
- FastAPI documents a 422 for every operation it validates, but `api.errors` answers request
  validation with 400: `install_openapi` rewrites each such 422 into the 400 envelope.
- Starlette answers a method a path does not have with a 405 whose `Allow` lists only the first
  route matching the path (one route per method here, so `/v1/files/{id}` said `GET` and hid
  `DELETE`), and nothing answered `OPTIONS`. `allowed_methods` collects every route's methods
  for a path; `OptionsMiddleware` answers `OPTIONS` on any /v1 path with them, and every 405
  carries them (`api.errors`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api.schemas.common import ErrorResponse

DESCRIPTIONS = {
    400: "Invalid request: `error.param` names the field.",
    401: "Missing, unknown or revoked API key.",
    403: "This key may not do this (the admin endpoints need an admin key).",
    404: "No such object for this team.",
    409: "Conflicts with the object's current state, or a reused Idempotency-Key.",
    413: "The upload is larger than the server's limit (REPLAYFT_MAX_UPLOAD_BYTES).",
    429: "A limit of the team's is reached (`error.param` names it); `Retry-After` says when it "
    "clears, where that is known.",
    503: "The service cannot answer now (database unreachable or saturated): retry after "
    "`Retry-After` seconds.",
}

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: each code answered with the error envelope."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorResponse, "description": DESCRIPTIONS[code]}
        if code in (429, 503):
            out[code]["headers"] = _RETRY_AFTER
    return out


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(app: FastAPI, scope: dict[str, Any]) -> set[str]:
    """Every method some route answers at the request's path, plus OPTIONS under /v1 (empty if
    no route matches), found by asking the app's routes to match the path under each method
    (included routers are nested route objects in FastAPI, so the routes cannot be listed)."""
    methods: set[str] = set()
    for method in _METHODS:
        probe = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": [],
            "query_string": b"",
            "path_params": {},
        }
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            methods.add(method)
    if methods and scope["path"].startswith("/v1/"):
        methods.add("OPTIONS")  # answered by `OptionsMiddleware`
    return methods


def allow_header(methods: set[str]) -> str:
    return ", ".join(sorted(methods))


def install_openapi(app: FastAPI) -> None:
    """The custom schema (422 -> 400 envelope) and `OPTIONS` for every API path."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None:
                        responses.setdefault(
                            "400",
                            {
                                "description": DESCRIPTIONS[400],
                                "content": {"application/json": {"schema": error_ref}},
                            },
                        )
            components = schema.get("components", {}).get("schemas", {})
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(OptionsMiddleware)


class OptionsMiddleware:
    """`OPTIONS` on an API path: 204 with `Allow`. A middleware, not a catch-all route, because
    such a route would match every /v1 path and turn a GET of an unknown one into a 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "OPTIONS"
            and scope["path"].startswith("/v1/")
        ):
            methods = allowed_methods(scope["app"], scope)
            if methods:
                response = Response(status_code=204, headers={"Allow": allow_header(methods)})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
