"""``/api/v1/batches``: submit, list, read, control, delete, recover and clean up batches.

Handlers are plain functions (FastAPI runs them in its thread pool): the store is synchronous.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError
from pydantic.json_schema import SkipJsonSchema

from batchyard.core.defaults import MAX_ATTEMPTS_LIMIT
from batchyard.core.engine import Engine
from batchyard.core.errors import IdempotencyConflict, InputError, InputProblem, NotFound
from batchyard.core.models import BatchInfo, Estimate, FailurePolicy, ItemInfo, Priority
from batchyard.core.states import FINAL_BATCH, BatchStatus, ItemStatus
from batchyard.io.nesting import json_too_deep, too_deep_message
from batchyard.server import idempotency, submit
from batchyard.server.deps import engine_of, owned, settings_of, tenant_of
from batchyard.server.errors import ERROR_RESPONSES, ErrorResponse
from batchyard.server.schemas import (
    Batch,
    BatchCreate,
    BatchList,
    BudgetUpdate,
    CleanupRequest,
    CleanupResult,
    EstimateRequest,
    InputFormatName,
    ItemList,
    RecoverResult,
    SubmitOptions,
    ValidationReport,
)
from batchyard.server.settings import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

router = APIRouter(prefix="/batches", tags=["batches"], responses={404: ERROR_RESPONSES[404]})

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
# Constraints inside the optional types, so that OpenAPI shows them (on a union they are lost)
NonNegative = Annotated[int, Field(ge=0)]
Attempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS_LIMIT)]
Rate = Annotated[float, Field(ge=0, le=1)]
Amount = Annotated[float, Field(ge=0)]
CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ValidationReport, "description": "dry_run: what would be created; nothing was"},
    400: ERROR_RESPONSES[400], 403: {"model": ErrorResponse, "description": "Processor or input_uri not allowed"},
    409: {"model": ErrorResponse, "description": "Idempotency-Key already used for another request"},
    413: {"model": ErrorResponse, "description": "Request body too large"}, 422: ERROR_RESPONSES[422],
}


def _created(info: BatchInfo) -> JSONResponse:
    return JSONResponse(Batch.model_validate(info.model_dump()).model_dump(mode="json"), status_code=201,
                        headers={"Location": f"/api/v1/batches/{info.batch_id}"})


# -- submitting ----------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=Batch, responses=CREATE_RESPONSES,
             summary="Create a batch from items inline or an input URI")
def create_batch(body: BatchCreate, request: Request, idempotency_key: idempotency.KeyHeader = None) -> Any:
    engine, settings = engine_of(request), settings_of(request)
    proc = submit.allowed_processor(engine, settings, body.processor)
    key = None if body.dry_run else idempotency.request_key(idempotency_key, body.model_dump(mode="json"))
    if key is not None and (replay := idempotency.replayed(engine, tenant_of(request), key)) is not None:
        return replay  # before reading any input
    if body.items is not None:
        rows, source = submit.inline_rows(settings, body.items, proc, body.params), None
    else:
        assert body.input_uri is not None
        rows, source = submit.uri_rows(settings, body.input_uri, body.input_format, proc, body.params), body.input_uri
    if body.dry_run:
        return JSONResponse(submit.report(engine, proc, body.params, rows).model_dump(mode="json"))
    try:
        return _created(submit.create(engine, body, proc, settings, rows, source, tenant_of(request), key))
    except IdempotencyConflict as exc:
        return idempotency.raced(engine, key, exc)


def _form_options(processor: str, params: str | None, parallel_jobs: int, priority: Priority,
                  max_failures: int | None, max_failure_rate: float | None, max_attempts: int | None,
                  description: str | None, tags: list[str] | None, start: bool, dry_run: bool,
                  webhook: dict[str, Any] | None, budget: float | None = None) -> SubmitOptions:
    if params and json_too_deep(params):  # json.loads would raise RecursionError (a 500) near 1,000 levels
        raise InputError([InputProblem(line=None, column="params", reason=too_deep_message("params"))])
    try:
        shared = json.loads(params) if params else {}
    except ValueError as exc:
        raise InputError([InputProblem(line=None, column="params", reason=f"not JSON: {exc}")]) from None
    if not isinstance(shared, dict):
        raise InputError([InputProblem(line=None, column="params", reason="expected a JSON object")])
    split = [t for tag in tags or [] for t in tag.split(",")]
    try:
        return SubmitOptions(processor=processor, params=shared, parallel_jobs=parallel_jobs, priority=priority,
                             failure_policy=FailurePolicy(max_failures=max_failures,
                                                          max_failure_rate=max_failure_rate),
                             max_attempts=max_attempts, description=description, tags=split, start=start,
                             dry_run=dry_run, webhook=webhook, budget=budget)
    except ValidationError as exc:
        raise InputError([InputProblem(line=None, column=".".join(map(str, e["loc"])), reason=e["msg"])
                          for e in exc.errors()]) from None


async def _only_known_fields(request: Request) -> None:
    """Refuse form fields the upload does not take (``tenant``, ``status``, a misspelt option), as JSON bodies
    refuse unknown keys: multipart has no ``extra="forbid"``, and a dropped field would be silently ignored."""
    form = await request.form()  # parsed already for the route's own fields: Starlette keeps it
    unknown = sorted(set(form.keys()) - set(inspect.signature(upload_batch).parameters) - {"request"})
    if unknown:
        raise RequestValidationError([{"loc": ("body", name), "msg": "Extra inputs are not permitted",
                                       "type": "extra_forbidden"} for name in unknown])


@router.post("/upload", status_code=201, response_model=Batch, responses=CREATE_RESPONSES,
             dependencies=[Depends(_only_known_fields)],
             summary="Create a batch from an uploaded file (CSV, JSONL, JSON or text)")
def upload_batch(
    request: Request,
    file: Annotated[UploadFile, File(description="The input file; its format comes from its extension.")],
    processor: Annotated[str, Form(min_length=1)],
    params: Annotated[str | SkipJsonSchema[None], Form(description="Shared parameters, a JSON object.",
                                                       json_schema_extra={"contentMediaType": "application/json"})]
        = None,
    input_format: Annotated[InputFormatName | SkipJsonSchema[None], Form()] = None,
    parallel_jobs: Annotated[int, Form(ge=1, le=100_000)] = 8,
    priority: Annotated[Priority, Form()] = Priority.NORMAL,
    max_failures: Annotated[NonNegative | SkipJsonSchema[None], Form()] = None,
    max_failure_rate: Annotated[Rate | SkipJsonSchema[None], Form()] = None,
    max_attempts: Annotated[Attempts | SkipJsonSchema[None], Form()] = None,
    description: Annotated[str | SkipJsonSchema[None], Form()] = None,
    tags: Annotated[list[str] | SkipJsonSchema[None], Form(description="Tags, repeated or comma-separated.")] = None,
    webhook_url: Annotated[str | SkipJsonSchema[None], Form(description="Webhook URL (see POST /batches).")] = None,
    webhook_progress: Annotated[bool, Form(description="Also send batch.progress events.")] = False,
    budget: Annotated[Amount | SkipJsonSchema[None], Form(description="Budget (see POST /batches).")] = None,
    start: Annotated[bool, Form()] = True,
    dry_run: Annotated[bool, Form()] = False,
    idempotency_key: idempotency.KeyHeader = None,
) -> Any:
    engine, settings = engine_of(request), settings_of(request)
    proc = submit.allowed_processor(engine, settings, processor)  # first: the processor decides what params mean
    hook = {"url": webhook_url, "progress": webhook_progress} if webhook_url else None
    opts = _form_options(processor, params, parallel_jobs, priority, max_failures, max_failure_rate, max_attempts,
                         description, tags, start, dry_run, hook, budget)
    key = None if opts.dry_run else idempotency.request_key(
        idempotency_key, {**opts.model_dump(mode="json"), "input_format": input_format, "filename": file.filename},
        idempotency.file_sha256(file.file) if idempotency_key else None)
    if key is not None and (replay := idempotency.replayed(engine, tenant_of(request), key)) is not None:
        return replay  # before parsing the file again
    with submit.spooled_upload(file.file, file.filename, input_format) as (path, fmt):
        rows = submit.upload_rows(settings, path, file.filename, fmt, proc, opts.params)
        if opts.dry_run:
            return JSONResponse(submit.report(engine, proc, opts.params, rows).model_dump(mode="json"))
        try:
            return _created(submit.create(engine, opts, proc, settings, rows, file.filename, tenant_of(request), key))
        except IdempotencyConflict as exc:
            return idempotency.raced(engine, key, exc)


@router.post("/validate", response_model=ValidationReport, responses={**CREATE_RESPONSES, 200: {}},
             summary="Check a submission without creating anything")
def validate_batch(body: BatchCreate, request: Request) -> ValidationReport:
    engine, settings = engine_of(request), settings_of(request)
    proc = submit.allowed_processor(engine, settings, body.processor)
    if body.items is not None:
        rows = submit.inline_rows(settings, body.items, proc, body.params)
    else:
        assert body.input_uri is not None
        rows = submit.uri_rows(settings, body.input_uri, body.input_format, proc, body.params)
    return submit.report(engine, proc, body.params, rows)


@router.post("/estimate", response_model=Estimate, responses={**CREATE_RESPONSES, 200: {}},
             summary="Count, estimated cost and duration of a submission, by cost model or by a sample run")
def estimate_batch(body: EstimateRequest, request: Request) -> Estimate:
    """Without ``sample``: the processor's cost model over every item; nothing is created. With ``sample``: the
    batch is created (pending unless ``start``), that many random items of it run for real (their results are
    kept and never redone), and the estimate extrapolates their actual cost and time."""
    engine, settings = engine_of(request), settings_of(request)
    proc = submit.allowed_processor(engine, settings, body.processor)
    if body.items is not None:
        rows, source = submit.inline_rows(settings, body.items, proc, body.params), None
    else:
        assert body.input_uri is not None
        rows, source = submit.uri_rows(settings, body.input_uri, body.input_format, proc, body.params), body.input_uri
    spec = submit.spec_for(body, proc, settings, source, tenant_of(request))
    if body.sample:
        rows = submit.within_quota(engine, settings, tenant_of(request), rows)
    return engine.estimate(spec, rows, sample=body.sample, seed=body.seed, start=body.start)


# -- the server's housekeeping -------------------------------------------------------------------


@router.post("/recover", response_model=RecoverResult, summary="Recover interrupted work now")
def recover(request: Request) -> RecoverResult:
    """Items leased by workers that died (or stopped heartbeating) go back to pending, as at start-up."""
    got = engine_of(request).store.reap(settings_of(request).lease_seconds)
    return RecoverResult(recovered=got.workers, items=got.items, batches=got.batches)


@router.post("/cleanup", response_model=CleanupResult, summary="Delete final batches older than days_old")
def cleanup(body: CleanupRequest, request: Request) -> CleanupResult:
    """Only the caller's tenant's batches: the server-wide sweep is ``--retention-days``."""
    engine, tenant = engine_of(request), tenant_of(request)
    cutoff = time.time() - body.days_old * 86400
    old = []  # listed first, deleted after: a deleted batch cannot be the next page's cursor
    for status in sorted(FINAL_BATCH):
        before = None
        while page := engine.list(status=status, tenant=tenant, limit=MAX_PAGE_SIZE, before=before):
            old += [b.batch_id for b in page if (b.completed_at or b.updated_at).timestamp() < cutoff]
            before = page[-1].batch_id
    deleted = []
    for batch_id in old:
        with contextlib.suppress(NotFound):  # deleted meanwhile by another sweep
            engine.store.delete_batch(batch_id)
            deleted.append(batch_id)
    return CleanupResult(deleted=deleted, count=len(deleted))


# -- reading -------------------------------------------------------------------------------------


@router.get("", response_model=BatchList, summary="List batches, newest first")
def list_batches(
    request: Request,
    status: BatchStatus | None = None,
    processor: str | None = None,
    tag: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    before: Annotated[str | None, Query(description="Cursor: the next_before of the previous page.")] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> BatchList:
    found = engine_of(request).list(
        status=status.value if status else None, processor=processor, tag=tag, limit=limit + 1, before=before,
        tenant=tenant_of(request),
        # API times are whole microseconds; the store's are finer: a batch's own created_at must match it
        created_after=created_after.timestamp() - 1e-6 if created_after else None,
        created_before=created_before.timestamp() if created_before else None)
    page = found[:limit]
    return BatchList(batches=page, next_before=page[-1].batch_id if len(found) > limit else None)


def _items_page(engine: Engine, batch_id: str, status: ItemStatus | None, after: int, limit: int) -> ItemList:
    found = list(engine.store.iter_items(batch_id, status=status.value if status else None, after_seq=after,
                                         limit=limit + 1))
    page = found[:limit]
    return ItemList(items=page, next_after=page[-1].seq if len(found) > limit else None)


def _json(model: Batch | ItemList) -> Response:
    """The model as JSON, serialised here: returning a Response spares FastAPI's re-validation of the value
    against ``response_model`` (a second trip to the thread pool per call). For the reads clients poll."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.get("/{batch_id}", response_model=Batch, summary="A batch's status, counters, progress and ETA")
def get_batch(batch_id: str, request: Request, include_details: bool = False) -> Response:
    info = owned(request, batch_id)
    out = Batch.model_construct(**dict(info), items=None)  # the same values, validated by the store's BatchInfo
    if include_details:
        out.items = _items_page(engine_of(request), batch_id, None, 0, DEFAULT_PAGE_SIZE).items
    return _json(out)


@router.get("/{batch_id}/items", response_model=ItemList, summary="A batch's items, in input order")
def list_items(batch_id: str, request: Request, status: ItemStatus | None = None,
               after: Annotated[int, Query(ge=0, le=2**62, description="Cursor: the next_after of the previous page.")]
               = 0,
               limit: Limit = DEFAULT_PAGE_SIZE) -> Response:
    owned(request, batch_id)
    return _json(_items_page(engine_of(request), batch_id, status, after, limit))


@router.get("/{batch_id}/items/{item_id}", response_model=ItemInfo, summary="One item, with every attempt's error")
def get_item(batch_id: str, item_id: str, request: Request) -> ItemInfo:
    owned(request, batch_id)
    return engine_of(request).store.get_item(batch_id, item_id)


# -- controlling ---------------------------------------------------------------------------------

CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {409: ERROR_RESPONSES[409]}


def _control(request: Request, batch_id: str, action: Literal["start", "pause", "resume", "cancel", "retry"]) -> Batch:
    owned(request, batch_id)
    info = getattr(engine_of(request), action)(batch_id)
    return Batch.model_validate(info.model_dump())


@router.post("/{batch_id}/start", response_model=Batch, responses=CONTROL_RESPONSES, summary="Start a pending batch")
def start_batch(batch_id: str, request: Request) -> Batch:
    return _control(request, batch_id, "start")


@router.post("/{batch_id}/pause", response_model=Batch, responses=CONTROL_RESPONSES,
             summary="Pause: no new items start; in-flight items finish")
def pause_batch(batch_id: str, request: Request) -> Batch:
    return _control(request, batch_id, "pause")


@router.post("/{batch_id}/resume", response_model=Batch, responses=CONTROL_RESPONSES, summary="Resume a paused batch")
def resume_batch(batch_id: str, request: Request) -> Batch:
    return _control(request, batch_id, "resume")


@router.post("/{batch_id}/cancel", response_model=Batch, responses=CONTROL_RESPONSES,
             summary="Cancel: pending items are cancelled; in-flight items finish")
def cancel_batch(batch_id: str, request: Request) -> Batch:
    return _control(request, batch_id, "cancel")


@router.post("/{batch_id}/retry", response_model=Batch, responses=CONTROL_RESPONSES,
             summary="Rerun the failed items of a completed or failed batch")
def retry_batch(batch_id: str, request: Request) -> Batch:
    return _control(request, batch_id, "retry")


@router.post("/{batch_id}/budget", response_model=Batch, responses=CONTROL_RESPONSES,
             summary="Set or remove a batch's budget; a batch paused at its old one continues")
def set_budget(batch_id: str, body: BudgetUpdate, request: Request) -> Batch:
    owned(request, batch_id)
    info = engine_of(request).set_budget(batch_id, body.budget, resume=body.resume)
    return Batch.model_validate(info.model_dump())


@router.delete("/{batch_id}", status_code=204, response_class=Response, responses=CONTROL_RESPONSES,
               summary="Delete a final batch and its items")
def delete_batch(batch_id: str, request: Request) -> Response:
    owned(request, batch_id)
    engine_of(request).store.delete_batch(batch_id)
    return Response(status_code=204)
