"""``GET /batches/{id}/results``: a batch's results streamed as JSON, CSV or JSONL in flat memory.

``outputs.write_results`` writes to a file object in one of a few export threads; ``_Pipe`` hands its
text to the response in chunks through a small bounded queue, so the first bytes leave at once and a
million items never sit in memory. A client that goes away stops the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from batchyard.core.store import Store
from batchyard.io import outputs
from batchyard.server.deps import engine_of, owned
from batchyard.server.errors import ERROR_RESPONSES
from batchyard.server.schemas import ResultFormat

log = logging.getLogger("batchyard.server")
router = APIRouter(prefix="/batches", tags=["batches"])

CHUNK = 64 * 1024
DEPTH = 8  # chunks in flight: memory stays under DEPTH * CHUNK whatever the batch size
MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
_END = object()
# Exports run in a few long-lived threads: each thread holds one store connection (and its page cache),
# so a thread per download would leak a connection per download.
EXPORT_THREADS = 4
_EXPORTS = ThreadPoolExecutor(EXPORT_THREADS, thread_name_prefix="batchyard-export")


class _Closed(Exception):
    pass


class _Pipe:
    """A write-only text file whose chunks a reader takes from a bounded queue."""

    def __init__(self) -> None:
        self.q: queue.Queue[Any] = queue.Queue(DEPTH)
        self.parts: list[str] = []
        self.size = 0
        self.closed = threading.Event()

    def write(self, text: str) -> int:
        self.parts.append(text)
        self.size += len(text)
        if self.size >= CHUNK:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self.parts:
            self._put("".join(self.parts).encode())
            self.parts, self.size = [], 0

    def _put(self, value: Any) -> None:
        while True:
            if self.closed.is_set():
                raise _Closed
            try:
                self.q.put(value, timeout=0.2)
                return
            except queue.Full:
                continue

    def run(self, store: Store, batch_id: str, fmt: str, errors_only: bool) -> None:
        try:
            outputs.write_results(store, batch_id, self, fmt, errors_only=errors_only)  # type: ignore[arg-type]
            self.flush()
        except _Closed:
            return
        except Exception:  # the status line is gone: log it and end the stream short
            log.exception("exporting %s failed", batch_id)
        with contextlib.suppress(_Closed):
            self._put(_END)


async def _stream(pipe: _Pipe) -> AsyncIterator[bytes]:
    try:
        while True:
            chunk = await asyncio.to_thread(pipe.q.get)
            if chunk is _END:
                return
            yield chunk
    finally:
        pipe.closed.set()  # the writer stops at its next write
        with contextlib.suppress(queue.Full):
            pipe.q.put_nowait(_END)  # and a reader thread still blocked in get() is released


@router.get("/{batch_id}/results", summary="Download results (JSON with a summary, CSV or JSONL), streamed",
            response_class=StreamingResponse, responses={
                200: {"description": "The results", "content": {m.split(";")[0]: {} for m in MEDIA.values()}},
                404: ERROR_RESPONSES[404], 422: ERROR_RESPONSES[422]})
def results(batch_id: str, request: Request, format: ResultFormat = "json",
            errors_only: Annotated[bool, Query(description="Only the failed items.")] = False) -> StreamingResponse:
    """While the batch runs, the items done so far (``partial`` in the JSON summary)."""
    info = owned(request, batch_id)
    pipe = _Pipe()
    _EXPORTS.submit(pipe.run, engine_of(request).store, batch_id, format, errors_only)
    suffix = "-errors" if errors_only else ""
    return StreamingResponse(_stream(pipe), media_type=MEDIA[format], headers={
        "Content-Disposition": f'attachment; filename="{info.batch_id}{suffix}.{format}"'})
