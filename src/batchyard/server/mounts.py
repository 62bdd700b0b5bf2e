"""Mounted adapters: routers that speak someone else's API over ordinary batches (``batchyard serve --mount``).

The contract. An adapter is a ``.py`` file or a dotted module, loaded like a processor module
(``core.processor.import_source``), that defines a module-level ``router: fastapi.APIRouter``. The server:

- includes every mounted router at the root of the app, in the order given, *before* its own routers, so a
  path an adapter declares wins even where it collides with batchyard's (a seed's ``GET /api/v1/health``);
- puts every mounted route behind the same authentication as ``/api/v1`` (``auth.authenticate``: with API
  keys configured, ``Authorization: Bearer <key>``, and the caller's tenant on the connection);
- keeps its own exception handlers app-wide. An adapter that owes its clients another error shape installs
  its own handling inside its routes (a custom ``APIRouter(route_class=...)`` that catches exceptions, or
  ``try``/``except`` in its handlers); whatever it lets escape is answered in batchyard's shape.

An adapter is a thin translation that keeps no state of its own outside the store: it reaches the engine and
the caller's tenant through ``batchyard.server.deps`` (``engine_of``, ``settings_of``, ``tenant_of``,
``owned``) and creates batches through ``batchyard.server.submit`` (``allowed_processor``, ``inline_rows`` or
``uri_rows``, ``create``), as ``/api/v1/batches`` does, so its batches are ordinary batches that every other
surface (``/api/v1``, the CLI, the dashboard) sees.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter

from batchyard.core.errors import ConfigError
from batchyard.core.processor import import_source


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
