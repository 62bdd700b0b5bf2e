"""What every route needs from the app: the engine, the settings, the caller's tenant and its batches.

They take an ``HTTPConnection`` (the base of ``Request`` and ``WebSocket``) so that WebSocket routes use
the same checks as HTTP ones.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from batchyard.core.engine import Engine
from batchyard.core.errors import NotFound
from batchyard.core.models import BatchInfo
from batchyard.server.settings import Settings


def engine_of(conn: HTTPConnection) -> Engine:
    return conn.app.state.engine  # type: ignore[no-any-return]


def settings_of(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings  # type: ignore[no-any-return]


def tenant_of(conn: HTTPConnection) -> str:
    """The caller's tenant: the one its API key belongs to (``auth.authenticate`` put it on the
    connection), or the server's single tenant when it has no keys."""
    return getattr(conn.state, "tenant", None) or settings_of(conn).tenant


def owned(conn: HTTPConnection, batch_id: str) -> BatchInfo:
    """The batch, if it belongs to the caller's tenant (another tenant's batch is simply not found)."""
    info = engine_of(conn).status(batch_id)
    if info.tenant != tenant_of(conn):
        raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
    return info
