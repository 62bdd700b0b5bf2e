"""Seed 001's batch API over batchyard batches: mount with ``batchyard serve --mount``.

    batchyard serve --port 8080 --processors examples/upc_lookup/processors.py --mount examples/upc_lookup/api.py

The paths and fields are the seed's (``Batch Processing from Google Cloud Storage``):

- ``POST /api/batch/process`` with ``gcs_path``, ``create_drafts`` (default true) and ``test_mode`` (default
  false) starts an ordinary ``upc-lookup`` batch over the file's lines and answers with the job (below).
  ``gcs_path`` is read by the server like any ``input_uri``: ``gs://`` (and ``s3://``) with the server's own
  credentials (the ``cloud`` extra), local paths and ``file://`` under its ``--data-root``, public ``https://``.
  ``test_mode`` validates every code and plans its lookup, without lookups or drafts.
- ``GET /api/batch/status/{job_id}``: the job with the seed's result structure: ``total_upcs``, ``successful``,
  ``failed``, and ``results`` with ``input_source``, ``source_type``, ``success_rate`` (percent of the codes done
  so far that succeeded), ``processing_time_seconds`` (time spent running) and ``results``, one entry per code in
  file order: ``{"upc", "status": "success", ...what was found...}`` or ``{"upc", "status": "failed", "error"}``
  (or ``pending``/``cancelled`` while it runs or after a cancel).
- ``GET /api/batch/jobs``: ``{"jobs": [...], "count"}``, the caller's jobs newest first (at most 100), each as the
  status shows it without the per-code list.
- ``GET /health``: ``{"status": "healthy"}``.

``job_id`` is the batch id, so ``batchyard status <job_id> --url ...``, ``/api/v1`` and the dashboard show the
same job; ``status`` is batchyard's, with ``running`` shown as ``processing`` and ``cancelling`` as
``cancelled``. Errors are ``{"error": "..."}`` with batchyard's status codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from batchyard.core.engine import Engine
from batchyard.core.errors import NotFound
from batchyard.core.models import BatchInfo, ItemInfo
from batchyard.server import submit
from batchyard.server.deps import engine_of, owned, settings_of, tenant_of
from batchyard.server.mounts import shaped_errors
from batchyard.server.schemas import SubmitOptions

PROCESSOR = "upc-lookup"  # registered by processors.py (not imported here: the server loaded it already)
TAG = "seed001"
PARALLEL = 8  # lookups in flight at once; the processor's rate limit paces them
JOBS_SHOWN = 100
SOURCE_TYPES = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3", "http": "url", "https": "url", None: "local",
                "file": "local"}
STATUS = {"running": "processing", "cancelling": "cancelled"}

router = APIRouter(route_class=shaped_errors(lambda status, message, exc: {"error": message}),
                   tags=["seed 001: batch processing"])


class ProcessRequest(BaseModel):
    gcs_path: str = Field(min_length=1, description="The UPC file: gs://bucket/upcs.txt (or another input URI).")
    create_drafts: bool = True
    test_mode: bool = False


def stamp(at: datetime | None) -> str | None:
    """The seed's timestamps: UTC with milliseconds and a Z."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if at else None


def upc_of(item: ItemInfo) -> Any:
    return item.payload.get("upc") if isinstance(item.payload, dict) else item.payload


def per_code(items: Iterator[ItemInfo]) -> Iterator[dict[str, Any]]:
    for it in items:
        if it.status == "succeeded":
            yield {"upc": upc_of(it), "status": "success", **(it.result or {})}
        elif it.status == "failed":
            yield {"upc": upc_of(it), "status": "failed", "error": it.error.message if it.error else None}
        else:
            yield {"upc": upc_of(it), "status": str(it.status)}


def job(info: BatchInfo, engine: Engine | None = None) -> dict[str, Any]:
    """A batch as seed 001 reports a job; with ``engine``, with the result of every code."""
    done = info.items_succeeded + info.items_failed
    results: dict[str, Any] = {
        "input_source": info.source,
        "source_type": SOURCE_TYPES.get(submit.uri_scheme(info.source or ""), "other"),
        "success_rate": round(100.0 * info.items_succeeded / done, 1) if done else 0.0,
        "processing_time_seconds": round(info.active_seconds, 1),
    }
    if engine is not None:
        results["results"] = list(per_code(engine.items(info.batch_id)))
    return {
        "job_id": info.batch_id,
        "status": STATUS.get(info.status, str(info.status)),
        "gcs_path": info.source,
        "started_at": stamp(info.started_at),
        "completed_at": stamp(info.completed_at),
        "total_upcs": info.items_total,
        "successful": info.items_succeeded,
        "failed": info.items_failed,
        "results": results,
    }


@router.post("/api/batch/process")
def process(body: ProcessRequest, request: Request) -> dict[str, Any]:
    engine, settings = engine_of(request), settings_of(request)
    proc = submit.allowed_processor(engine, settings, PROCESSOR)
    mode = "test mode: validation and planning, no lookups" if body.test_mode else \
        "lookups and drafts" if body.create_drafts else "lookups, no drafts"
    opts = SubmitOptions(processor=PROCESSOR, params={"create_drafts": body.create_drafts,
                                                      "test_mode": body.test_mode},
                         parallel_jobs=PARALLEL, tags=[TAG], description=f"seed 001 job ({mode})")
    rows = submit.uri_rows(settings, body.gcs_path, None, proc, opts.params)  # a text file: one code a line
    info = submit.create(engine, opts, proc, settings, rows, body.gcs_path, tenant_of(request))
    return job(info)


@router.get("/api/batch/status/{job_id}")
def status(job_id: str, request: Request) -> dict[str, Any]:
    info = owned(request, job_id)
    if info.processor != PROCESSOR:  # another processor's batch is not this API's to show
        raise NotFound(f"no job {job_id!r}", kind="batch", ident=job_id)
    return job(info, engine_of(request))


@router.get("/api/batch/jobs")
def jobs(request: Request) -> dict[str, Any]:
    found = engine_of(request).list(processor=PROCESSOR, tenant=tenant_of(request), limit=JOBS_SHOWN)
    return {"jobs": [job(info) for info in found], "count": len(found)}


@router.get("/health")
def health() -> dict[str, Any]:
    return {"status": "healthy", "timestamp": stamp(datetime.now(UTC))}
