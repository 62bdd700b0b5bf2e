"""``/v1``: OpenAI's Files and Batches API over batchyard's batches and files, for the ``openai`` package.

Enabled by ``batchyard serve --upstream URL`` (``install``). Behind the same API keys and tenants as
``/api/v1``: a key sees its tenant's files and batches only. Errors have OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``. Handlers are plain functions (FastAPI runs them in its
thread pool): the store is synchronous. Every read of a batch first expires it if its completion window
has ended and finalizes it if it is final (``batches.settle``), so what a client sees never waits for the
background sweep, which does the same for batches nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException

from batchyard.core.engine import Engine
from batchyard.core.errors import InvalidTransition, NotFound
from batchyard.core.models import BatchInfo, FileInfo
from batchyard.core.states import BatchStatus
from batchyard.gateway import batches
from batchyard.gateway.config import GatewayConfig
from batchyard.gateway.models import (
    BatchCreate,
    BatchList,
    BatchObject,
    ErrorResponse,
    FileDeleted,
    FileList,
    FileObject,
    FilePurpose,
)
from batchyard.gateway.upstream import PROCESSOR, Gateway, configure
from batchyard.server import submit
from batchyard.server.auth import authenticate
from batchyard.server.deps import engine_of, settings_of, tenant_of
from batchyard.server.mounts import shaped_errors
from batchyard.server.settings import Settings

log = logging.getLogger("batchyard.gateway")
SWEEP_SECONDS = 1.0      # how often batches nobody reads are expired, started and finalized
START_AFTER_SECONDS = 5  # a batch still validating this long was left so by a crash between create and start
_TYPES = {401: "invalid_request_error", 403: "invalid_request_error", 404: "invalid_request_error",
          409: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error", 503: "server_error"}


class OpenAIHTTPError(HTTPException):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(status, message)
        self.param, self.code = param, code


def _shape(status: int, message: str, exc: Exception) -> dict[str, Any]:
    code = getattr(exc, "code", None)
    if isinstance(exc, NotFound):
        code = "not_found"
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": getattr(exc, "param", None), "code": code if isinstance(code, str) else None}}


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(_sweep(app.state.engine), name="gateway-sweep")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(prefix="/v1", tags=["openai"], route_class=shaped_errors(_shape), lifespan=_lifespan,
                   responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse},
                              404: {"model": ErrorResponse}})


def install(app: FastAPI, engine: Engine, settings: Settings) -> Gateway:
    """Serve ``/v1`` on ``app`` and configure this process's processor for the server's upstream."""
    gw = configure(GatewayConfig.from_settings(settings), engine.store)
    app.state.gateway = gw
    app.include_router(router, dependencies=[Depends(authenticate)])
    return gw


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


# -- files --------------------------------------------------------------------------------------


def _file_object(f: FileInfo) -> FileObject:
    return FileObject(id=f.file_id, bytes=f.bytes, created_at=int(f.created_at.timestamp()), filename=f.filename,
                      purpose=f.purpose)


def _owned_file(request: Request, file_id: str) -> FileInfo:
    f = engine_of(request).store.get_file(file_id)
    if f.tenant != tenant_of(request):
        raise NotFound(f"No such File object: {file_id}", kind="file", ident=file_id)
    return f


@router.post("/files", response_model=FileObject, summary="Upload a file (purpose=batch: a JSONL batch input)")
def create_file(request: Request, file: Annotated[UploadFile, File()],
                purpose: Annotated[FilePurpose, Form()]) -> Any:
    config = _gateway(request).config
    fh = file.file
    size = fh.seek(0, 2)
    fh.seek(0)
    if size > config.max_file_bytes:
        raise OpenAIHTTPError(400, f"file of {size} bytes is larger than this server's limit of "
                                   f"{config.max_file_bytes} bytes", "file", "file_too_large")
    if purpose == "batch":
        problems = batches.check_file(iter(lambda: fh.read(1 << 20), b""), config)
        if problems:
            p = problems[0]
            raise OpenAIHTTPError(400, f"invalid batch input file: {p}", p.param, p.code)
        fh.seek(0)
    f = engine_of(request).store.add_file(tenant_of(request), purpose, file.filename or "upload.jsonl", fh)
    return _file_object(f)


@router.get("/files", response_model=FileList, summary="List files")
def list_files(request: Request, purpose: str | None = None, after: str | None = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000) -> Any:
    if after is not None:
        _owned_file(request, after)
    found = engine_of(request).store.list_files(tenant=tenant_of(request), purpose=purpose, limit=limit + 1,
                                                after=after)
    data = [_file_object(f) for f in found[:limit]]
    return FileList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                    has_more=len(found) > limit)


@router.get("/files/{file_id}", response_model=FileObject, summary="A file's description")
def get_file(request: Request, file_id: str) -> Any:
    return _file_object(_owned_file(request, file_id))


@router.get("/files/{file_id}/content", summary="A file's bytes", response_class=StreamingResponse)
def file_content(request: Request, file_id: str) -> Any:
    f = _owned_file(request, file_id)
    return StreamingResponse(engine_of(request).store.file_content(f.file_id), media_type="application/octet-stream",
                             headers={"Content-Length": str(f.bytes),
                                      "Content-Disposition": f'attachment; filename="{f.filename}"'})


@router.delete("/files/{file_id}", response_model=FileDeleted, summary="Delete a file")
def delete_file(request: Request, file_id: str) -> Any:
    f = _owned_file(request, file_id)
    engine_of(request).store.delete_file(f.file_id)
    return FileDeleted(id=f.file_id)


# -- batches ------------------------------------------------------------------------------------


def _owned_batch(request: Request, batch_id: str) -> BatchInfo:
    try:
        info = engine_of(request).status(batch_id)
    except NotFound:
        info = None
    if info is None or info.tenant != tenant_of(request) or not batches.is_gateway_batch(info):
        raise NotFound(f"No such Batch object: {batch_id}", kind="batch", ident=batch_id)
    return info


def _object(request: Request, info: BatchInfo, with_usage: bool = True) -> BatchObject:
    gw = _gateway(request)
    upstream = gw.describe().get(gw.config.default.url, {})
    return batches.to_openai(engine_of(request).store, info, upstream, with_usage=with_usage)


@router.post("/batches", response_model=BatchObject, summary="Create a batch from an uploaded input file")
def create_batch(request: Request, body: BatchCreate) -> Any:
    engine, settings, tenant = engine_of(request), settings_of(request), tenant_of(request)
    config = _gateway(request).config
    try:
        f = _owned_file(request, body.input_file_id)
    except NotFound:
        raise OpenAIHTTPError(404, f"No such File object: {body.input_file_id}", "input_file_id",
                              "not_found") from None
    if f.purpose != "batch":
        raise OpenAIHTTPError(400, f"file {f.file_id} has purpose {f.purpose!r}; a batch's input needs 'batch'",
                              "input_file_id", "invalid_file_purpose")
    try:
        batches.window_seconds(body.completion_window)
    except ValueError as exc:
        raise OpenAIHTTPError(400, str(exc), "completion_window", "invalid_completion_window") from None
    # As OpenAI does: a file with bad lines makes a batch that fails validation, with every problem listed.
    problems = batches.check_file(engine.store.file_content(f.file_id), config, body.endpoint, first_only=False)
    spec = batches.new_spec(f, body.endpoint, body.completion_window, body.metadata, tenant, config, problems)
    rows = iter(()) if problems else batches.rows_of(engine.store, f.file_id)
    info = engine.submit(spec, submit.within_quota(engine, settings, tenant, rows), start=False)
    created = _object(request, info)  # validating: the batch as it was created
    engine.start(info.batch_id)
    return created


@router.get("/batches/{batch_id}", response_model=BatchObject, summary="A batch")
def get_batch(request: Request, batch_id: str) -> Any:
    info = batches.settle(engine_of(request), _owned_batch(request, batch_id))
    return _object(request, info)


@router.post("/batches/{batch_id}/cancel", response_model=BatchObject, summary="Cancel a batch")
def cancel_batch(request: Request, batch_id: str) -> Any:
    engine = engine_of(request)
    info = batches.settle(engine, _owned_batch(request, batch_id))
    if info.status != BatchStatus.CANCELLING:
        try:
            info = engine.cancel(info.batch_id)
        except InvalidTransition:
            status = batches.to_openai(engine.store, info, with_usage=False).status
            raise OpenAIHTTPError(409, f"Cannot cancel a batch with status '{status}'.", None,
                                  "invalid_state") from None
    return _object(request, batches.settle(engine, info))


@router.get("/batches", response_model=BatchList, summary="List batches, newest first")
def list_batches(request: Request, after: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Any:
    engine = engine_of(request)
    if after is not None:
        _owned_batch(request, after)
    found = engine.store.list_batches(processor=PROCESSOR, tenant=tenant_of(request), limit=limit + 1, before=after)
    data = [_object(request, batches.settle(engine, b), with_usage=False) for b in found[:limit]]
    return BatchList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                     has_more=len(found) > limit)


# -- the sweep ----------------------------------------------------------------------------------


def sweep_once(engine: Engine, since: float) -> None:
    """Expire, start and finalize the gateway batches that changed since ``since`` or are not final."""
    store, now = engine.store, time.time()
    seen: set[str] = set()
    for status in (BatchStatus.PENDING, BatchStatus.RUNNING, BatchStatus.PAUSED, BatchStatus.CANCELLING):
        for info in store.list_batches(status=status, processor=PROCESSOR, limit=1000):
            seen.add(info.batch_id)
            if not batches.is_gateway_batch(info):
                continue
            info = batches.expire_if_due(engine, info, now)
            if info.status == BatchStatus.PENDING and now - info.created_at.timestamp() > START_AFTER_SECONDS:
                with contextlib.suppress(InvalidTransition):
                    engine.start(info.batch_id)
    for info in store.list_batches(processor=PROCESSOR, updated_after=since, limit=1000):
        if info.is_final and info.batch_id not in seen and batches.is_gateway_batch(info):
            batches.finalize(store, info)


async def _sweep(engine: Engine) -> None:
    since = time.time() - 86400.0  # at start-up: whatever ended in the last day, while no server ran
    while True:
        started = time.time()
        try:
            await asyncio.to_thread(sweep_once, engine, since)
            since = started - 10 * SWEEP_SECONDS  # overlap: a batch that ended during the pass is seen again
        except Exception:  # the next pass tries again
            log.exception("gateway sweep failed")
        await asyncio.sleep(SWEEP_SECONDS)
