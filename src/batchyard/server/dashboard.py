"""The web dashboard: static files (hand-written HTML, CSS and JS modules, no build step) served at ``/``.

The page itself needs no key: it asks for one when the API answers 401 and keeps it for the browser tab's
session only, sending it as ``Authorization: Bearer`` on every API call (event streams are read with
``fetch`` for that reason: ``EventSource`` cannot send headers).

The mount is added after every API route and never answers under ``/api/`` or for WebSockets, so an
unknown API path still gets the API's own 404 or 405 rather than a static-file answer.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from batchyard.server.schemas import API_PREFIX

DIRECTORY = Path(__file__).with_name("dashboard")
# The pages show payloads, results and error messages that callers wrote: scripts only from our own
# files, so that such text can never run as code even if a view forgot to escape it.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated (ETag) each time, so an upgraded server's files are seen at once
}


class DashboardFiles(StaticFiles):
    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(HEADERS)
        return response


class DashboardMount(Mount):
    """``/`` for pages only: the API's paths and WebSockets fall through to the router's own answers."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            return Match.NONE, {}
        return super().matches(scope)


def mount(app: FastAPI) -> None:
    """Serve the dashboard at ``/``; call after every other route is added (the first match wins)."""
    app.router.routes.append(DashboardMount("/", app=DashboardFiles(directory=DIRECTORY, html=True),
                                            name="dashboard"))
