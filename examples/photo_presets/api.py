"""Seed 003's batch control API over batchyard batches: mount with ``batchyard serve --mount``.

    batchyard serve --port 5100 --processors examples/photo_presets/processors.py \\
        --mount examples/photo_presets/api.py

Paths, request and response fields are the seed's (``BATCH_CONTROL_QUICK_START``); each batch it starts is an
ordinary ``photo-preset`` batch, seen by ``/api/v1``, the CLI and the dashboard, and each of its controls is the
engine's. What the seed's words mean here:

- ``config`` is the batch's shared params (``preset``, ``blend``, and optionally ``curve``, ``sharpen``);
  ``session_id`` is kept as the batch's tag ``session_id:<json>``.
- ``processed_count`` counts photos done successfully, ``failed_count`` those that failed; ``progress_percent``
  is the share of photos done either way. ``status`` is batchyard's, with ``cancelling`` shown as
  ``cancelled`` (the seed has no word for "in-flight photos are finishing"). ``paused_at`` is the time of the
  batch's last change while it is paused (its pause, or an in-flight photo finishing after it).
- ``GET /batch/list`` lists the active batches (pending, running, paused), newest first.
- ``POST /batch/recover``: batchyard recovers interrupted work itself when the server starts (the batches go on
  running: none is left paused for the client to resume); ``recovered_count`` reports the batches that start-up
  recovery returned to work (server-wide), plus any that this call recovers from workers that died since.
- ``POST /batch/cleanup`` deletes this caller's finished photo batches that ended more than ``days_old`` days ago.

Errors are ``{"detail": "..."}`` with batchyard's status codes (404 unknown batch, 409 a control the batch's state
does not allow, 422 bad request or config).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from batchyard.core.errors import NotFound
from batchyard.core.models import BatchInfo
from batchyard.server import submit
from batchyard.server.deps import engine_of, owned, settings_of, tenant_of
from batchyard.server.mounts import shaped_errors
from batchyard.server.schemas import SubmitOptions

PROCESSOR = "photo-preset"  # registered by processors.py (not imported here: the server loaded it already)
TAG = "seed003"
SESSION_TAG = "session_id:"
PARALLEL = int(os.environ.get("PHOTO_PRESETS_PARALLEL", "4"))  # photos of one batch processed at once
ACTIVE = ("pending", "running", "paused")
FINAL = ("completed", "failed", "cancelled")
PAGE = 1000

router = APIRouter(route_class=shaped_errors(lambda status, message, exc: {"detail": message}),
                   tags=["seed 003: batch control"])


class StartRequest(BaseModel):
    photo_ids: list[int | str] = Field(min_length=1)
    session_id: int | str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="Processing config: preset, blend, ...")


class CleanupRequest(BaseModel):
    days_old: int | float = Field(7, ge=0)


def stamp(at: datetime | None) -> str | None:
    """The seed's timestamps: UTC, to the second, with a Z."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else None


def session_of(info: BatchInfo) -> Any:
    for tag in info.tags:
        if tag.startswith(SESSION_TAG):
            return json.loads(tag[len(SESSION_TAG):])
    return None


def seed_status(info: BatchInfo) -> str:
    return "cancelled" if info.status == "cancelling" else str(info.status)


def progress(info: BatchInfo) -> float:
    done = info.items_succeeded + info.items_failed
    return round(100.0 * done / info.items_total, 1) if info.items_total else 100.0


def photo_batch(request: Request, batch_id: str) -> BatchInfo:
    """The caller's photo batch (another processor's batch is not this API's to show)."""
    info = owned(request, batch_id)
    if info.processor != PROCESSOR:
        raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
    return info


@router.post("/batch/start")
def start_batch(body: StartRequest, request: Request) -> dict[str, Any]:
    engine, settings = engine_of(request), settings_of(request)
    proc = submit.allowed_processor(engine, settings, PROCESSOR)
    tags = [TAG] + ([SESSION_TAG + json.dumps(body.session_id)] if body.session_id is not None else [])
    opts = SubmitOptions(processor=PROCESSOR, params=body.config, parallel_jobs=PARALLEL, tags=tags,
                         description=f"seed 003 batch of {len(body.photo_ids)} photos")
    rows = submit.inline_rows(settings, list(body.photo_ids), proc, opts.params)
    info = submit.create(engine, opts, proc, settings, rows, "POST /batch/start", tenant_of(request))
    return {"message": "Batch processing started", "batch_id": info.batch_id, "photo_count": info.items_total}


def control(request: Request, batch_id: str, action: str) -> None:
    photo_batch(request, batch_id)
    getattr(engine_of(request), action)(batch_id)


@router.post("/batch/{batch_id}/pause")
def pause_batch(batch_id: str, request: Request) -> dict[str, Any]:
    control(request, batch_id, "pause")
    return {"message": "Batch paused successfully", "batch_id": batch_id}


@router.post("/batch/{batch_id}/resume")
def resume_batch(batch_id: str, request: Request) -> dict[str, Any]:
    control(request, batch_id, "resume")
    return {"message": "Batch resumed successfully", "batch_id": batch_id}


@router.post("/batch/{batch_id}/cancel")
def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
    control(request, batch_id, "cancel")
    return {"message": "Batch cancelled successfully", "batch_id": batch_id}


@router.get("/batch/{batch_id}/status")
def batch_status(batch_id: str, request: Request) -> dict[str, Any]:
    info = photo_batch(request, batch_id)
    return {
        "batch_id": info.batch_id,
        "session_id": session_of(info),
        "status": seed_status(info),
        "total_photos": info.items_total,
        "processed_count": info.items_succeeded,
        "failed_count": info.items_failed,
        "progress_percent": progress(info),
        "created_at": stamp(info.created_at),
        "started_at": stamp(info.started_at),
        "paused_at": stamp(info.updated_at) if info.status == "paused" else None,
        "completed_at": stamp(info.completed_at),
    }


@router.get("/batch/list")
def list_batches(request: Request) -> dict[str, Any]:
    engine, tenant = engine_of(request), tenant_of(request)
    found = [b for status in ACTIVE
             for b in engine.list(status=status, processor=PROCESSOR, tenant=tenant, limit=PAGE)]
    found.sort(key=lambda b: b.created_at, reverse=True)
    batches = [{"batch_id": b.batch_id, "status": seed_status(b), "total_photos": b.items_total,
                "processed_count": b.items_succeeded, "progress_percent": progress(b)} for b in found]
    return {"batches": batches, "count": len(batches)}


@router.post("/batch/recover")
def recover(request: Request) -> dict[str, Any]:
    at_start = getattr(request.app.state, "recovered", None)
    now = engine_of(request).store.reap(settings_of(request).lease_seconds)
    return {"message": "Batch recovery completed",
            "recovered_count": (at_start.batches if at_start else 0) + now.batches,
            "failed_count": 0,  # recovery is one transaction in the store: it happens whole, or the call fails
            "timestamp": stamp(datetime.now(UTC))}


@router.post("/batch/cleanup")
def cleanup(body: CleanupRequest, request: Request) -> dict[str, Any]:
    engine, tenant = engine_of(request), tenant_of(request)
    cutoff = time.time() - body.days_old * 86400
    doomed = []
    for status in FINAL:
        before = None
        while True:  # created before the cutoff is necessary for having ended before it, not sufficient
            page = engine.list(status=status, processor=PROCESSOR, tenant=tenant, created_before=cutoff,
                               before=before, limit=PAGE)
            doomed += [b.batch_id for b in page if (b.completed_at or b.updated_at).timestamp() < cutoff]
            if len(page) < PAGE:
                break
            before = page[-1].batch_id  # the cursor must still exist: nothing is deleted while paging
    for batch_id in doomed:
        engine.store.delete_batch(batch_id)
    return {"message": "Batch cleanup completed", "cleaned_count": len(doomed), "days_old": body.days_old}
