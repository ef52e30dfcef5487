"""Serving the dashboard: the static build of `frontend/` (Vite, `npm run build` -> frontend/dist)
at `/`, with a single-page-app fallback so a deep link such as /jobs/ftjob-123 loads index.html
and the page's router takes over.

The fallback route only matches paths outside the API (`/v1`, `/healthz`, `/readyz`, `/docs`,
`/redoc`, `/openapi.json`): an unknown API path stays a JSON 404, and a wrong method on an API
path stays a 405. The dashboard is a plain client of the public API; nothing here reads data.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.convertors import Convertor, register_url_convertor

DIST_DIR = Path(__file__).resolve().parents[1] / "frontend" / "dist"
API_PREFIXES = ("v1", "healthz", "readyz", "docs", "redoc", "openapi.json")

_NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>ReplayFT</title>
<h1>ReplayFT</h1><p>The dashboard is not built. Install Node.js 20+ and npm, then run
<code>scripts/install.sh</code> (it runs <code>npm ci &amp;&amp; npm run build</code> in
<code>frontend/</code>). The API is up: see <a href="/docs">/docs</a>.</p>"""


class DashboardPath(Convertor[str]):
    """Any path that does not start with an API prefix."""

    regex = "(?!(?:" + "|".join(p.replace(".", r"\.") for p in API_PREFIXES) + ")(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("dashboard", DashboardPath())


def mount_dashboard(app: FastAPI, dist: Path = DIST_DIR) -> None:
    """Register after every API router: `/assets/*` as static files, everything else outside
    the API as index.html (or a note on how to build it)."""
    index = dist / "index.html"
    if (dist / "assets").is_dir():
        # hashed file names: safe to cache for ever
        app.mount("/assets", StaticFiles(directory=dist / "assets"), name="dashboard-assets")

    @app.get("/{path:dashboard}", include_in_schema=False, response_model=None)
    def dashboard(path: str) -> FileResponse | HTMLResponse:
        if not index.is_file():
            return HTMLResponse(_NOT_BUILT)
        candidate = (dist / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(dist.resolve()):
            return FileResponse(candidate)  # e.g. favicon.svg from frontend/public
        # index.html must be revalidated, so a new build's asset names are picked up
        return FileResponse(index, headers={"Cache-Control": "no-cache"})
