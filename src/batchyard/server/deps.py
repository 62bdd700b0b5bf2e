"""What every route needs from the app: the engine, the settings, and a batch of this server's tenant."""

from __future__ import annotations

from fastapi import Request

from batchyard.core.engine import Engine
from batchyard.core.errors import NotFound
from batchyard.core.models import BatchInfo
from batchyard.server.settings import Settings


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def owned(request: Request, batch_id: str) -> BatchInfo:
    """The batch, if it belongs to this server's tenant (another tenant's batch is simply not found)."""
    info = engine_of(request).status(batch_id)
    if info.tenant != settings_of(request).tenant:
        raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
    return info
