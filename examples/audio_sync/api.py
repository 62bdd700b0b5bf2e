"""Seed 004's HTTP API over batchyard: mount with ``batchyard serve --mount examples/audio_sync/api.py``.

The audio-sync team's clients (their ``batch_processor.py``, their curl + jq scripts) keep working
unchanged: this router serves their paths, request fields, response fields, status words and error shape
(``{"success": false, "error": "...", "timestamp": "..."}``), backed by ordinary batchyard batches of the
``audio-sync`` processor, which ``/api/v1/batches``, the CLI and the dashboard see like any other.

    POST   /api/v1/analysis/batch/upload-csv          file, description, priority, notification_webhook
    POST   /api/v1/analysis/batch/{batch_id}/start    {"parallel_jobs", "priority", "notification_webhook"}
    GET    /api/v1/analysis/batch/{batch_id}/status   ?include_details=true
    GET    /api/v1/analysis/batch/{batch_id}/results  ?export_format=csv
    DELETE /api/v1/analysis/batch/{batch_id}          cancels the batch
    GET    /api/v1/reports/{batch_id}.json | .csv     the results' download links
    GET    /api/v1/health                             (takes the place of batchyard's while mounted)
    GET    /api/v1/analysis/methods

Translations, all derived from batchyard's state (the adapter keeps none of its own):

- Upload creates the batch *pending* (``start=False``); its items are ``item_001``, ``item_002``... Start
  starts it. ``parallel_jobs``, ``priority`` and ``notification_webhook`` may be given at upload (where the
  seed takes priority and webhook; ``parallel_jobs`` there is our addition, default 2) and again at start.
- Batch status: pending -> ``pending``, running -> ``processing``, paused -> ``paused``, cancelling and
  cancelled -> ``cancelled`` (nothing new starts; in-flight items finish), completed, failed.
  Item status: running -> ``processing``, succeeded -> ``completed``; the others keep their names.
- ``items_completed`` counts succeeded items, ``items_failed`` failed ones, ``items_processing`` those
  running (in the start response: those starting now, ``min(parallel_jobs, items left)``, as the seed's
  client prints it as "started with N parallel jobs"). ``progress`` is the percentage of items done.
- ``summary.average_confidence`` is the mean confidence of the succeeded items (null when none succeeded);
  ``processing_time_seconds`` the time the batch has spent running; ``analysis_id`` the UTC time the
  item's analysis finished (``YYYYmmdd_HHMMSS``, the seed's form).
- Errors: 404 unknown batch, 400 invalid CSV or request (every problem with its line and column), 401/403/429
  as batchyard answers them, 500 otherwise; a failed item carries ``error`` instead of ``result``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batchyard.core.engine import Engine
from batchyard.core.errors import BatchyardError, InvalidTransition, NotFound
from batchyard.core.models import BatchInfo, ItemInfo, Priority, Webhook
from batchyard.core.processor import import_source
from batchyard.core.states import BatchStatus, ItemStatus
from batchyard.io.flatten import neutralise
from batchyard.server import mounts, netguard, submit
from batchyard.server.deps import engine_of, owned, settings_of, tenant_of
from batchyard.server.routes_system import VERSION
from batchyard.server.schemas import SubmitOptions

# The processor module, loaded once whether or not `--processors` named it too (same file, same module).
procs = import_source(str(Path(__file__).with_name("processors.py")))
dsp = procs.dsp
PROCESSOR = "audio-sync"
DEFAULT_PARALLEL = 2  # the seed's own examples start with 2 parallel jobs
PAGE = 500  # items read from the store per query while streaming a response
BATCH_WORDS = {BatchStatus.PENDING: "pending", BatchStatus.RUNNING: "processing", BatchStatus.PAUSED: "paused",
               BatchStatus.CANCELLING: "cancelled", BatchStatus.CANCELLED: "cancelled",
               BatchStatus.COMPLETED: "completed", BatchStatus.FAILED: "failed"}
ITEM_WORDS = {ItemStatus.PENDING: "pending", ItemStatus.RUNNING: "processing", ItemStatus.SUCCEEDED: "completed",
              ItemStatus.FAILED: "failed", ItemStatus.CANCELLED: "cancelled"}


# -- the seed's error shape ----------------------------------------------------------------------


def now() -> str:
    return stamp(datetime.now(UTC))


def stamp(at: datetime | None) -> str | None:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at is not None else None


def seed_error(status: int, message: str, exc: Exception) -> dict[str, Any]:
    return {"success": False, "error": message, "timestamp": now()}


class SeedRoute(mounts.shaped_errors(seed_error)):  # type: ignore[misc]
    """Errors in the seed's shape, with batchyard's statuses except where the seed says otherwise: it answers
    400 for an invalid CSV or request, where batchyard says 422 (bad input) or 409 (not in this state)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            response = await handler(request)
            if response.status_code in (409, 422):  # only errors: no route here answers these otherwise
                response.status_code = 400
            return response

        return route


router = APIRouter(route_class=SeedRoute, tags=["audio-sync (seed 004)"])


def batch_of(request: Request, batch_id: str) -> BatchInfo:
    """The caller's batch, or the seed's 404 ("Batch batch_12345 not found")."""
    try:
        return owned(request, batch_id)
    except NotFound:
        raise NotFound(f"Batch {batch_id} not found", kind="batch", ident=batch_id) from None


# -- translations --------------------------------------------------------------------------------


def batch_word(info: BatchInfo) -> str:
    return BATCH_WORDS[info.status]


def counters(info: BatchInfo) -> dict[str, Any]:
    return {"progress": round(info.progress_percent, 1), "items_total": info.items_total,
            "items_completed": info.items_succeeded, "items_processing": info.items_running,
            "items_failed": info.items_failed}


def analysis(it: ItemInfo, with_id: bool) -> dict[str, Any]:
    r = it.result or {}
    out = {"offset_seconds": r.get("offset_seconds"), "confidence": r.get("confidence"),
           "method_used": r.get("method_used")}
    if with_id:
        out["analysis_id"] = it.finished_at.astimezone(UTC).strftime("%Y%m%d_%H%M%S") if it.finished_at else None
    return out


def outcome(it: ItemInfo, with_id: bool) -> dict[str, Any]:
    """``result`` for a completed item, ``error`` for a failed one, nothing for the others."""
    if it.status == ItemStatus.SUCCEEDED:
        return {"result": analysis(it, with_id)}
    if it.status == ItemStatus.FAILED and it.error is not None:
        return {"error": it.error.message}
    return {}


def files_of(it: ItemInfo) -> dict[str, Any]:
    payload = it.payload if isinstance(it.payload, dict) else {}
    return {"master_file": payload.get("master_file"), "dub_file": payload.get("dub_file")}


def uploaded_view(it: ItemInfo) -> dict[str, Any]:
    """An item as the upload response shows it: its columns as the processor will read them (defaults filled)."""
    p = procs.AudioSyncParams.model_validate(it.payload)
    return {"item_id": it.item_id, **files_of(it), "methods": list(p.methods), "ai_model": p.ai_model,
            "description": p.description, "tags": list(p.tags), "status": ITEM_WORDS[it.status]}


def all_items(engine: Engine, batch_id: str) -> Iterator[ItemInfo]:
    """Every item, a page per query: each page is read whole, so no store cursor outlives one call (the
    response streams from a thread pool, a page per thread hop)."""
    after = 0
    while True:
        page = list(engine.store.iter_items(batch_id, after_seq=after, limit=PAGE))
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].seq


def json_stream(head: dict[str, Any], key: str, rows: Iterator[dict[str, Any]],
                tail: dict[str, Any]) -> Iterator[bytes]:
    """``{**head, key: [rows...], **tail}`` as JSON, written as the rows come: a large batch never sits in memory."""
    opening = json.dumps(head)[:-1]
    yield (opening + (", " if head else "") + json.dumps(key) + ": [").encode()
    for n, row in enumerate(rows):
        yield ((", " if n else "") + json.dumps(row)).encode()
    closing = json.dumps(tail)[1:]
    yield ("]" + (", " + closing if tail else "}")).encode()


def streamed(head: dict[str, Any], key: str, rows: Iterator[dict[str, Any]], tail: dict[str, Any],
             status: int = 200) -> StreamingResponse:
    return StreamingResponse(json_stream(head, key, rows, tail), status_code=status, media_type="application/json")


def summary(engine: Engine, info: BatchInfo) -> dict[str, Any]:
    mean = engine.store.result_stats(info.batch_id).get("confidence", {}).get("mean")
    return {"items_total": info.items_total, "items_completed": info.items_succeeded,
            "items_failed": info.items_failed,
            "average_confidence": round(mean, 3) if mean is not None else None,
            "processing_time_seconds": round(info.active_seconds, 3)}


# -- upload and start ----------------------------------------------------------------------------


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parallel_jobs: int | None = Field(None, ge=1, le=100_000)
    priority: Priority | None = None
    notification_webhook: str | None = None


class RequestError(BatchyardError):
    """A request the seed's API refuses (400)."""


def webhook_of(url: str | None) -> Webhook | None:
    if not url:
        return None
    try:
        return Webhook(url=url)
    except ValidationError as exc:
        raise RequestError(f"notification_webhook: {exc.errors()[0]['msg']}") from None


def item_keys(rows: submit.Rows) -> submit.Rows:
    """The CSV's rows as items ``item_001``, ``item_002``...: the seed's item ids are batchyard's."""
    for n, (_, payload) in enumerate(rows, 1):
        yield f"item_{n:03d}", payload


@router.post("/api/v1/analysis/batch/upload-csv", summary="Upload a batch CSV (seed 004); the batch waits for start")
def upload_csv(
    request: Request,
    file: Annotated[UploadFile, File(description="master_file,dub_file[,methods,ai_model,description,tags]")],
    description: Annotated[str | None, Form()] = None,
    priority: Annotated[Priority, Form()] = Priority.NORMAL,
    notification_webhook: Annotated[str | None, Form()] = None,
    parallel_jobs: Annotated[int, Form(ge=1, le=100_000, description="Not in the seed: default for start.")]
        = DEFAULT_PARALLEL,
) -> Response:
    engine, settings = engine_of(request), settings_of(request)
    proc = submit.allowed_processor(engine, settings, PROCESSOR)
    opts = SubmitOptions(processor=PROCESSOR, parallel_jobs=parallel_jobs, priority=priority,
                         webhook=webhook_of(notification_webhook), description=description, start=False)
    with submit.spooled_upload(file.file, file.filename, "csv") as (path, fmt):
        rows = submit.upload_rows(settings, path, file.filename, fmt, proc, opts.params)
        info = submit.create(engine, opts, proc, settings, item_keys(rows), file.filename, tenant_of(request))
    head = {"success": True, "batch_id": info.batch_id, "items_count": info.items_total}
    tail = {"message": f"Batch uploaded successfully with {info.items_total} items", "timestamp": now()}
    return streamed(head, "items", map(uploaded_view, all_items(engine, info.batch_id)), tail)


@router.post("/api/v1/analysis/batch/{batch_id}/start", summary="Start an uploaded batch (seed 004)")
def start_batch(batch_id: str, request: Request, body: StartRequest | None = None) -> Response:
    engine, settings = engine_of(request), settings_of(request)
    info = batch_of(request, batch_id)
    body = body or StartRequest()
    if info.status != BatchStatus.PENDING:
        raise RequestError(f"Batch {batch_id} is {batch_word(info)}; only an uploaded batch that has not "
                           "started can be started")
    webhook = webhook_of(body.notification_webhook)
    if webhook is not None:  # refused now, not at the first delivery (the SSRF guard of /api/v1)
        netguard.check_url(webhook.url, allow_private=settings.allow_private_network)
    changes = {k: v for k, v in (("parallel", body.parallel_jobs), ("priority", body.priority),
                                 ("webhook", webhook)) if v is not None and v != getattr(info, k)}
    if changes:
        configure = getattr(engine, "configure", None)
        if configure is None:  # see the README: this batchyard cannot change them once the batch exists
            given = ", ".join(f"{'parallel_jobs' if k == 'parallel' else k} ({v})" for k, v in changes.items())
            raise RequestError(f"this server cannot change {given} after upload; give them with the upload "
                               "(form fields parallel_jobs, priority, notification_webhook)")
        configure(batch_id, **changes)
    info = engine.start(batch_id)
    left = info.items_pending + info.items_running
    return JSONResponse({
        "success": True, "batch_id": batch_id, "status": batch_word(info), **counters(info),
        "items_processing": min(info.parallel, left), "estimated_completion": stamp(info.estimated_completion),
        "message": f"Batch processing started with {info.parallel} parallel jobs", "timestamp": now()})


# -- reading -------------------------------------------------------------------------------------


@router.get("/api/v1/analysis/batch/{batch_id}/status", summary="Progress, counters and ETA (seed 004)")
def batch_status(batch_id: str, request: Request, include_details: bool = False) -> Response:
    info = batch_of(request, batch_id)
    head = {"success": True, "batch_id": batch_id, "status": batch_word(info), **counters(info)}
    tail = {"estimated_completion": stamp(info.estimated_completion), "timestamp": now()}
    if not include_details:
        return JSONResponse({**head, **tail})
    details = ({"item_id": it.item_id, "status": ITEM_WORDS[it.status], **outcome(it, with_id=False)}
               for it in all_items(engine_of(request), batch_id))
    return streamed(head, "items_details", details, tail)


def json_results(engine: Engine, info: BatchInfo) -> StreamingResponse:
    head = {"success": True, "batch_id": info.batch_id, "status": batch_word(info),
            "summary": summary(engine, info)}
    rows = ({"item_id": it.item_id, **files_of(it), "status": ITEM_WORDS[it.status], **outcome(it, with_id=True)}
            for it in all_items(engine, info.batch_id))
    tail = {"download_links": {"json_report": f"/api/v1/reports/{info.batch_id}.json",
                               "csv_export": f"/api/v1/reports/{info.batch_id}.csv"}, "timestamp": now()}
    return streamed(head, "results", rows, tail)


CSV_COLUMNS = ["item_id", "master_file", "dub_file", "status", "offset_seconds", "confidence", "method_used",
               "analysis_id", "error"]


def csv_results(engine: Engine, info: BatchInfo) -> StreamingResponse:
    """One row per item, the JSON results' fields flat; text cells neutralised against spreadsheet formulas."""

    def lines() -> Iterator[bytes]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        for it in all_items(engine, info.batch_id):
            got = outcome(it, with_id=True)
            row = {"item_id": it.item_id, **files_of(it), "status": ITEM_WORDS[it.status], **got.get("result", {}),
                   "error": got.get("error")}
            writer.writerow(["" if row.get(c) is None else neutralise(str(row[c])) if isinstance(row[c], str)
                             else row[c] for c in CSV_COLUMNS])
            if buf.tell() > 1 << 16:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue().encode()

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{info.batch_id}.csv"'})


@router.get("/api/v1/analysis/batch/{batch_id}/results", summary="Results as JSON or CSV, with a summary (seed 004)")
def batch_results(batch_id: str, request: Request,
                  export_format: Annotated[str, Query(pattern="^(json|csv)$")] = "json") -> Response:
    info = batch_of(request, batch_id)
    engine = engine_of(request)
    return csv_results(engine, info) if export_format == "csv" else json_results(engine, info)


@router.get("/api/v1/reports/{report}", summary="The results' download links: {batch_id}.json or .csv (seed 004)")
def report(report: str, request: Request) -> Response:
    batch_id, dot, ext = report.rpartition(".")
    if not dot or ext not in ("json", "csv"):
        raise RequestError(f"Report {report} not found: expected {{batch_id}}.json or {{batch_id}}.csv")
    info = batch_of(request, batch_id)
    engine = engine_of(request)
    return csv_results(engine, info) if ext == "csv" else json_results(engine, info)


# -- cancelling ----------------------------------------------------------------------------------


@router.delete("/api/v1/analysis/batch/{batch_id}", summary="Cancel a batch (seed 004): in-flight items finish")
def cancel_batch(batch_id: str, request: Request) -> Response:
    info = batch_of(request, batch_id)
    if info.is_final or info.status == BatchStatus.CANCELLING:
        raise RequestError(f"Batch {batch_id} is already {batch_word(info)}; there is nothing to cancel")
    try:
        info = engine_of(request).cancel(batch_id)
    except InvalidTransition:  # it finished meanwhile
        info = batch_of(request, batch_id)
        raise RequestError(f"Batch {batch_id} is already {batch_word(info)}; there is nothing to cancel") from None
    return JSONResponse({"success": True, "batch_id": batch_id, "status": batch_word(info), **counters(info),
                         "message": f"Batch {batch_id} cancelled", "timestamp": now()})


# -- service -------------------------------------------------------------------------------------


@router.get("/api/v1/health", summary="Health (seed 004's, in place of batchyard's while this adapter is mounted)")
def health(request: Request) -> Response:
    engine = engine_of(request)
    worker = request.app.state.worker
    try:
        engine.store.list_workers()
        store_ok, problem = True, None
    except Exception as exc:  # an unreachable store is what this endpoint reports
        store_ok, problem = False, f"{type(exc).__name__}: {exc}"
    healthy = store_ok and (worker is None or worker.alive)
    body: dict[str, Any] = {"success": healthy, "status": "healthy" if healthy else "unhealthy",
                            "version": VERSION, "timestamp": now()}
    if not healthy:
        body["error"] = problem or "the embedded worker has stopped"
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/api/v1/analysis/methods", summary="Analysis methods and AI models, and which run here (seed 004)")
def methods(request: Request) -> Response:
    descriptions = {
        "correlation": "Cross-correlation of the waveforms (FFT, GCC-PHAT): sample-accurate where the mixes "
                       "share their music and effects",
        "onset": "Correlation of onset envelopes (rises of energy in octave bands)",
        "spectral": "Correlation of spectral flux (rises of every spectral bin)",
        "mfcc": "Correlation of MFCC features (13 coefficients, mean-normalised)",
    }
    found = [{"name": m, "label": dsp.LABELS[m], "description": descriptions[m], "available": True}
             for m in dsp.METHODS]
    found.append({"name": "ai", "label": "AI", "description": "Neural audio embeddings (ai_model)",
                  "available": False, "reason": procs.unavailable_ai(None)})
    models = [{"name": m, "available": False, "reason": procs.unavailable_ai(m)}
              for m in ("wav2vec2", "yamnet", "spectral")]
    return JSONResponse({"success": True, "methods": found, "ai_models": models,
                         "default_methods": list(dsp.METHODS), "timestamp": now()})
