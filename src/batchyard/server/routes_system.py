"""``/processors``, ``/health`` and ``/metrics``."""

from __future__ import annotations

import time
from importlib.metadata import version as _version

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from batchyard.server.deps import engine_of, settings_of
from batchyard.server.schemas import Health, ProcessorInfo, ProcessorList, StoreHealth

router = APIRouter()
VERSION = _version("batchyard")


@router.get("/processors", response_model=ProcessorList, tags=["processors"],
            summary="Processors this server runs, with their parameter schemas")
def processors(request: Request) -> ProcessorList:
    from batchyard.core import processor as registry

    allow = settings_of(request).allow_unsafe_processors
    return ProcessorList(processors=[ProcessorInfo.model_validate(p.describe())
                                     for p in registry.all_processors() if allow or not p.unsafe])


@router.get("/health", response_model=Health, tags=["system"], summary="Store reachable, workers alive, version",
            responses={503: {"model": Health, "description": "The store cannot be read"}})
def health(request: Request) -> Response:
    engine = engine_of(request)
    embedded = request.app.state.worker
    try:
        workers = engine.store.list_workers()
        store = StoreHealth(ok=True)
    except Exception as exc:  # an unreachable store is what this endpoint reports
        workers, store = [], StoreHealth(ok=False, error=f"{type(exc).__name__}: {exc}")
    ok = store.ok and (embedded is None or embedded.alive)
    fresh = time.time() - settings_of(request).lease_seconds
    alive = sum(1 for w in workers if w.heartbeat_at.timestamp() >= fresh)
    out = Health(status="ok" if ok else "degraded", version=VERSION, store=store, workers=workers, workers_alive=alive,
                 embedded_workers=settings_of(request).workers if embedded is not None else 0)
    return JSONResponse(out.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get("/metrics", tags=["system"], summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
