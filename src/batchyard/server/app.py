"""The app factory: ``create_app(engine, settings)``.

The lifespan recovers interrupted work (``store.reap``), starts the embedded worker (unless
``settings.workers == 0``, for separate ``batchyard worker`` processes), runs the retention task, and
stops the worker gracefully at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from batchyard.core import processor as registry
from batchyard.core.engine import Engine
from batchyard.core.throttle import Throttle
from batchyard.core.worker import Worker
from batchyard.server import (
    dashboard,
    errors,
    events,
    middleware,
    mounts,
    results,
    routes_batches,
    routes_system,
    routes_timeline,
    routes_webhooks,
)
from batchyard.server.auth import Keyring, authenticate
from batchyard.server.metrics import registry_for
from batchyard.server.schemas import API_PREFIX
from batchyard.server.settings import Settings
from batchyard.server.webhooks import Dispatcher

log = logging.getLogger("batchyard.server")


def embedded_worker(engine: Engine, settings: Settings) -> Worker | None:
    """A worker over every processor this server may run, or None for an API-only server."""
    if settings.workers == 0:
        return None
    procs = [p for p in registry.all_processors() if settings.allow_unsafe_processors or not p.unsafe]
    return Worker(engine.store, procs, concurrency=settings.workers, sources=engine.sources,
                  lease_seconds=settings.lease_seconds, name=f"serve:{settings.host}:{settings.port}",
                  tenant_cap=settings.tenant_max_running, throttle=Throttle.from_env())


async def retention(engine: Engine, settings: Settings) -> None:
    """Delete final batches older than ``retention_days``, at start-up and then every interval."""
    assert settings.retention_days is not None
    while True:
        try:
            removed = await asyncio.to_thread(engine.cleanup, settings.retention_days)
            if removed:
                log.info("retention: deleted %d batches older than %g days", len(removed), settings.retention_days)
        except Exception:  # a failed sweep is retried at the next interval
            log.exception("retention sweep failed")
        await asyncio.sleep(settings.retention_interval_s)


def create_app(engine: Engine, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recovered = await asyncio.to_thread(engine.store.reap, settings.lease_seconds)
        app.state.recovered = recovered  # what start-up found, for adapters that report it (seed 003's recover)
        if recovered.workers:
            log.info("recovered %d items of %d batches from %d interrupted workers",
                     recovered.items, recovered.batches, recovered.workers)
        worker = app.state.worker = embedded_worker(engine, settings)
        if worker is not None:
            await asyncio.to_thread(worker.start)
        tasks = [asyncio.create_task(Dispatcher(engine, settings).run(), name="webhooks")]
        if settings.retention_days is not None:
            tasks.append(asyncio.create_task(retention(engine, settings), name="retention"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if worker is not None:
                await asyncio.to_thread(worker.stop, settings.grace_seconds)

    app = FastAPI(title="batchyard", version=routes_system.VERSION, lifespan=lifespan,
                  description="Run a processor over every item of a batch, in parallel, durably. "
                              "Every error has the shape `{\"error\": {\"code\", \"message\", \"details\"}}`.")
    app.state.engine = engine
    app.state.settings = settings
    app.state.worker = None
    app.state.metrics = registry_for(engine.store)
    app.state.keyring = Keyring(engine.store, settings.api_keys)
    errors.install(app)
    middleware.install(app, max_body_bytes=settings.max_upload_bytes)
    # Adapters first: the first matching route wins, so a seed's path that collides with ours is theirs.
    for router in mounts.load(settings.mounts):
        app.include_router(router, dependencies=[Depends(authenticate)])
    for module in (routes_batches, results, events, routes_webhooks, routes_timeline):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=[Depends(authenticate)],
                           responses={401: errors.ERROR_RESPONSES[401]})
    app.include_router(routes_system.router, prefix=API_PREFIX)  # probes: /health, /metrics, /processors
    if settings.upstream:  # the OpenAI-compatible batch gateway under /v1 (an edge of its own, imported only then)
        from batchyard.gateway.routes import install

        install(app, engine, settings)
    dashboard.mount(app)  # last: it serves whatever path no route above took (outside /api/v1)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = events.add_schemas(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes), app.routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
