"""``batchyard.AsyncClient``: ``Client`` for asyncio code (generated from the same calls, method for method)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from httpx_sse import aconnect_sse

from batchyard.client import _calls as c
from batchyard.client._calls import StreamEvent
from batchyard.client._sync import DEFAULT_URL, RECONNECT_SECONDS
from batchyard.client.errors import ConnectionFailed, from_response
from batchyard.core.models import BatchInfo, Estimate, ItemInfo, TimelinePoint, WebhookDelivery
from batchyard.server.schemas import (
    Batch,
    BatchList,
    CleanupResult,
    Health,
    ItemList,
    ProcessorInfo,
    RecoverResult,
    ValidationReport,
)

T = TypeVar("T")


class AsyncClient:
    """A batchyard server's API. ``base_url`` defaults to ``$BATCHYARD_URL`` or http://127.0.0.1:8000;
    ``api_key`` (sent as ``Authorization: Bearer``) to ``$BATCHYARD_API_KEY``."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout: float = 30.0,
                 headers: dict[str, str] | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url or os.environ.get("BATCHYARD_URL") or DEFAULT_URL
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       headers=c.auth_headers(api_key, headers), transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _do(self, call: c.Call[T]) -> T:
        try:
            return call.parse(await self._http.send(call.request(self._http)))
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.base_url, exc) from exc

    # -- submitting ------------------------------------------------------------------------------

    async def create_batch(self, processor: str, items: list[Any] | None = None, *, input_uri: str | None = None,
                     input_format: str | None = None, params: dict[str, Any] | None = None, parallel_jobs: int = 8,
                     priority: str = "normal", max_failures: int | None = None,
                     max_failure_rate: float | None = None, max_attempts: int | None = None,
                     description: str | None = None, tags: list[str] | None = None, start: bool = True,
                     idempotency_key: str | None = None,
                     webhook: str | dict[str, Any] | None = None, budget: float | None = None) -> Batch:
        """Create a batch from ``items`` (JSON values) or ``input_uri`` (read by the server).

        ``idempotency_key`` makes a retry safe: the server answers the same request with the same key with the
        batch the first one created, and refuses the key with another request (``ConflictError``)."""
        opts = c.submission(processor, params=params, parallel_jobs=parallel_jobs, priority=priority,
                            max_failures=max_failures, max_failure_rate=max_failure_rate, max_attempts=max_attempts,
                            description=description, tags=tags, start=start, webhook=webhook,
                            budget=budget)
        call = c.create_batch(opts, items, input_uri, input_format, idempotency_key=idempotency_key)
        return await self._do(call)  # type: ignore[no-any-return]

    async def upload(self, file: str | os.PathLike[str] | IO[bytes], processor: str, *, filename: str | None = None,
               input_format: str | None = None, params: dict[str, Any] | None = None, parallel_jobs: int = 8,
               priority: str = "normal", max_failures: int | None = None, max_failure_rate: float | None = None,
               max_attempts: int | None = None, description: str | None = None, tags: list[str] | None = None,
               start: bool = True, dry_run: bool = False, idempotency_key: str | None = None,
               webhook: str | dict[str, Any] | None = None,
               budget: float | None = None) -> Batch | ValidationReport:
        """Upload a CSV, JSONL, JSON or text file as a new batch (``dry_run``: only check it).

        ``idempotency_key``: as for ``create_batch`` (the same file, name and options are the same request)."""
        opts = c.submission(processor, params=params, parallel_jobs=parallel_jobs, priority=priority,
                            max_failures=max_failures, max_failure_rate=max_failure_rate, max_attempts=max_attempts,
                            description=description, tags=tags, start=start, webhook=webhook,
                            budget=budget)
        if isinstance(file, str | os.PathLike):
            with open(file, "rb") as fh:
                call = c.upload(opts, filename or Path(file).name, fh, input_format, dry_run, idempotency_key)
                return await self._do(call)  # type: ignore[no-any-return]
        call = c.upload(opts, filename or "upload", file, input_format, dry_run, idempotency_key)
        return await self._do(call)  # type: ignore[no-any-return]

    async def validate(self, processor: str, items: list[Any] | None = None, *, input_uri: str | None = None,
                 input_format: str | None = None, params: dict[str, Any] | None = None) -> ValidationReport:
        """Check a submission without creating anything: every problem, the item count, the estimated cost."""
        opts = c.submission(processor, params=params, parallel_jobs=1, priority="normal", max_failures=None,
                            max_failure_rate=None, max_attempts=None, description=None, tags=None, start=False)
        return await self._do(c.validate(opts, items, input_uri, input_format))

    # -- reading ---------------------------------------------------------------------------------

    async def list_batches(self, *, status: str | None = None, processor: str | None = None, tag: str | None = None,
                     created_after: datetime | None = None, created_before: datetime | None = None,
                     before: str | None = None, limit: int = 100) -> BatchList:
        return await self._do(c.list_batches(status, processor, tag, created_after, created_before, before, limit))

    async def iter_batches(self, **filters: Any) -> AsyncIterator[BatchInfo]:
        """Every batch matching ``filters`` (those of ``list_batches``), newest first, page by page."""
        before = filters.pop("before", None)
        while True:
            page = await self.list_batches(before=before, **filters)
            for b in page.batches:
                yield b
            if page.next_before is None:
                return
            before = page.next_before

    async def get_batch(self, batch_id: str, *, include_details: bool = False) -> Batch:
        return await self._do(c.get_batch(batch_id, include_details))

    async def list_items(self, batch_id: str, *, status: str | None = None, after: int = 0,
                         limit: int = 100) -> ItemList:
        return await self._do(c.list_items(batch_id, status, after, limit))

    async def iter_items(self, batch_id: str, *, status: str | None = None) -> AsyncIterator[ItemInfo]:
        after = 0
        while True:
            page = await self.list_items(batch_id, status=status, after=after, limit=1000)
            for it in page.items:
                yield it
            if page.next_after is None:
                return
            after = page.next_after

    async def get_item(self, batch_id: str, item_id: str) -> ItemInfo:
        return await self._do(c.get_item(batch_id, item_id))

    # -- controlling -----------------------------------------------------------------------------

    async def start(self, batch_id: str) -> Batch:
        return await self._do(c.control(batch_id, "start"))

    async def pause(self, batch_id: str) -> Batch:
        return await self._do(c.control(batch_id, "pause"))

    async def set_budget(self, batch_id: str, budget: float | None, *, resume: bool = True) -> Batch:
        """Set (None: remove) the batch's budget; with ``resume``, a batch paused at its old budget continues."""
        return await self._do(c.set_budget(batch_id, budget, resume))

    async def estimate(self, processor: str, items: list[Any] | None = None, *, input_uri: str | None = None,
                       input_format: str | None = None, params: dict[str, Any] | None = None,
                       parallel_jobs: int = 8, sample: int = 0, seed: int | None = None,
                       budget: float | None = None, start: bool = False) -> Estimate:
        """Count, estimated cost and duration: by the cost model (nothing created), or with ``sample`` by running
        that many random items for real; the sampled batch is created (``Estimate.batch_id``), pending unless
        ``start``."""
        opts = c.submission(processor, params=params, parallel_jobs=parallel_jobs, priority="normal",
                            max_failures=None, max_failure_rate=None, max_attempts=None, description=None, tags=None,
                            start=start, budget=budget)
        return await self._do(c.estimate(opts, items, input_uri, input_format, sample, seed))

    async def resume(self, batch_id: str) -> Batch:
        return await self._do(c.control(batch_id, "resume"))

    async def cancel(self, batch_id: str) -> Batch:
        return await self._do(c.control(batch_id, "cancel"))

    async def retry(self, batch_id: str) -> Batch:
        return await self._do(c.control(batch_id, "retry"))

    async def delete_batch(self, batch_id: str) -> None:
        await self._do(c.delete_batch(batch_id))

    # -- results and events ----------------------------------------------------------------------

    async def results(self, batch_id: str, path: str | os.PathLike[str], *, format: str = "json",
                errors_only: bool = False) -> Path:
        """Stream a batch's results to ``path`` (written whole or not at all); returns the path."""
        target = Path(path)
        tmp = target.with_name(target.name + ".partial")
        try:
            with open(tmp, "wb") as fh:
                async for chunk in self.iter_results(batch_id, format=format, errors_only=errors_only):
                    fh.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(target)
        return target

    async def iter_results(self, batch_id: str, *, format: str = "json",
                           errors_only: bool = False) -> AsyncIterator[bytes]:
        """A batch's results in chunks as they stream from the server, to write anywhere (stdout, a socket)."""
        call = c.results(batch_id, format, errors_only)
        try:
            async with self._http.stream(call.method, call.url, params=call.query,
                                         timeout=c.stream_timeout(self._http)) as r:
                if r.is_error:
                    await r.aread()
                    raise from_response(r)
                async for chunk in r.aiter_bytes():
                    yield chunk
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.base_url, exc) from exc

    async def events(self, batch_id: str | None = None, *, last_event_id: str | None = None,
               read_timeout: float | None = None) -> AsyncIterator[StreamEvent]:
        """The batch's live events until it is final (one connection; see ``wait`` for reconnects); with no
        ``batch_id``, the events of every batch, without end (resume with the last event's id)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        async with aconnect_sse(self._http, "GET", c.events_path(batch_id), headers=headers,
                         timeout=c.stream_timeout(self._http, read_timeout)) as es:
            if es.response.is_error:
                await es.response.aread()
                raise from_response(es.response)
            async for sse in es.aiter_sse():
                if sse.event in ("state", "progress"):
                    yield c.stream_event(sse.id, sse.event, sse.data)

    def ws_url(self, batch_id: str | None = None, *, last_event_id: str | None = None) -> str:
        """The WebSocket URL of the same events as ``events`` (for a browser or a websockets client)."""
        return c.ws_url(self.base_url, batch_id, last_event_id)

    async def wait(self, batch_id: str, *, on_progress: Callable[[BatchInfo], None] | None = None,
             timeout: float | None = None) -> BatchInfo:
        """Follow the batch's events until it is final and return it; reconnects with Last-Event-ID."""
        w = c.Waiter(batch_id, timeout, on_progress)
        while True:
            try:
                async for ev in self.events(batch_id, last_event_id=w.last, read_timeout=w.read_timeout()):
                    if (final := w.see(ev)) is not None:
                        return final
            except httpx.TransportError:
                pass  # the connection dropped: resume from the last event seen
            w.check()
            await asyncio.sleep(RECONNECT_SECONDS)

    # -- the server ------------------------------------------------------------------------------

    async def recover(self) -> RecoverResult:
        """Recover interrupted work now: dead workers' items go back to pending (as at start-up)."""
        return await self._do(c.recover())

    async def webhook_deliveries(self, batch_id: str) -> list[WebhookDelivery]:
        """The batch's webhook deliveries, oldest first, with every attempt."""
        return await self._do(c.webhook_deliveries(batch_id))

    async def timeline(self, batch_id: str, *, bucket_seconds: float | None = None) -> list[TimelinePoint]:
        """Succeeded and failed items per time bucket (by when they finished), oldest first: the
        dashboard's throughput chart. At most 200 points; ``bucket_seconds`` asks for a width."""
        return await self._do(c.timeline(batch_id, bucket_seconds))

    async def cleanup(self, days_old: float) -> CleanupResult:
        return await self._do(c.cleanup(days_old))

    async def processors(self) -> list[ProcessorInfo]:
        return await self._do(c.processors())

    async def health(self) -> Health:
        return await self._do(c.health())

    async def metrics(self) -> str:
        return await self._do(c.metrics())
