"""The browser chat page: ``GET /`` and its assets under ``/static/``.

The page and its assets are public (no API key): the key is typed into the page and sent only
with its API calls. They ship inside the package (``agent_api/static``), so they work offline.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_PACKAGE = ("agent_api", "static")

# The page loads only its own files and talks only to its own origin; it inserts model output as
# text, and this policy would block inline script even if something ever did not.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def _index_html() -> str:
    return (files(STATIC_PACKAGE[0]) / STATIC_PACKAGE[1] / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    """The chat page."""
    return HTMLResponse(_index_html(), headers=PAGE_HEADERS)


class _Assets(StaticFiles):
    """The page's scripts and styles; revalidated on each load (by ETag) so an upgrade shows at once."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_ui(app: FastAPI) -> None:
    """Serve the chat page at ``/`` and its assets at ``/static/``."""
    app.include_router(router)
    app.mount("/static", _Assets(packages=[STATIC_PACKAGE]), name="static")
