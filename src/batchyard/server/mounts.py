"""Mounted adapters: routers that speak someone else's API over ordinary batches (``batchyard serve --mount``).

The contract. An adapter is a ``.py`` file or a dotted module, loaded like a processor module
(``core.processor.import_source``), that defines a module-level ``router: fastapi.APIRouter``. The server:

- includes every mounted router at the root of the app, in the order given, *before* its own routers, so a
  path an adapter declares wins even where it collides with batchyard's (a seed's ``GET /api/v1/health``);
- puts every mounted route behind the same authentication as ``/api/v1`` (``auth.authenticate``: with API
  keys configured, ``Authorization: Bearer <key>``, and the caller's tenant on the connection);
- keeps its own exception handlers app-wide. An adapter that owes its clients another error shape installs
  its own handling inside its routes: ``APIRouter(route_class=shaped_errors(shape))`` below (or its own
  ``try``/``except``); whatever it lets escape is answered in batchyard's shape.
- keeps what its start-up recovery found on ``app.state.recovered`` (a ``core.store.Reaped``), for adapters
  whose API reports recovered work.

An adapter is a thin translation that keeps no state of its own outside the store: it reaches the engine and
the caller's tenant through ``batchyard.server.deps`` (``engine_of``, ``settings_of``, ``tenant_of``,
``owned``) and creates batches through ``batchyard.server.submit`` (``allowed_processor``, ``inline_rows`` or
``uri_rows``, ``create``), as ``/api/v1/batches`` does, so its batches are ordinary batches that every other
surface (``/api/v1``, the CLI, the dashboard) sees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from batchyard.core.errors import BatchyardError, ConfigError, InputError
from batchyard.core.processor import import_source
from batchyard.server import errors

log = logging.getLogger("batchyard.server")
# (status, message, the exception) -> the body an adapter's clients expect for an error
Shape = Callable[[int, str, Exception], Any]


def load(sources: Iterable[str]) -> list[APIRouter]:
    """The ``router`` of each adapter; a ``ConfigError`` naming the source when one cannot be had."""
    routers = []
    for src in sources:
        module = import_source(src, what="mount")
        router = getattr(module, "router", None)
        if not isinstance(router, APIRouter):
            found = "nothing" if router is None else f"a {type(router).__name__}"
            raise ConfigError(f"mount {src!r}: expected a module-level `router = fastapi.APIRouter()`, found {found}")
        routers.append(router)
    return routers


def shaped_errors(shape: Shape) -> type[APIRoute]:
    """A route class answering every error of its routes with ``shape(status, message, exc)`` as JSON.

    The status is the one batchyard would give (``errors.lookup``: 401 for a missing key, 404, 409, 422 for bad
    input...), with its headers (``WWW-Authenticate``, ``Retry-After``); request validation errors are 422 with
    pydantic's messages; anything unexpected is logged and 500. Use it as ``APIRouter(route_class=...)``.
    """

    def answer(status: int, message: str, exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(shape(status, message, exc), status_code=status, headers=headers)

    class ShapedErrors(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except BatchyardError as exc:
                    status, body = errors.describe(exc)
                    # An input error's own text lists its problems; batchyard's message points to details instead
                    message = str(exc) if isinstance(exc, InputError) else body["error"]["message"]
                    return answer(status, message, exc, getattr(exc, "headers", None))
                except RequestValidationError as exc:
                    found = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
                    return answer(422, f"invalid request: {found}", exc)
                except HTTPException as exc:
                    return answer(exc.status_code, str(exc.detail), exc, exc.headers)
                except Exception as exc:
                    log.exception("unhandled error on %s %s", request.method, request.url.path)
                    return answer(500, "internal server error; see the server log", exc)

            return route

    return ShapedErrors
