"""``batchyard.Client``: the REST API from Python, over httpx, typed with the server's own schemas."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from httpx_sse import connect_sse

from batchyard.client import _calls as c
from batchyard.client._calls import StreamEvent
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
DEFAULT_URL = "http://127.0.0.1:8000"
RECONNECT_SECONDS = 0.5


class Client:
    """A batchyard server's API. ``base_url`` defaults to ``$BATCHYARD_URL`` or http://127.0.0.1:8000;
    ``api_key`` (sent as ``Authorization: Bearer``) to ``$BATCHYARD_API_KEY``."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout: float = 30.0,
                 headers: dict[str, str] | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url or os.environ.get("BATCHYARD_URL") or DEFAULT_URL
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=c.auth_headers(api_key, headers),
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _do(self, call: c.Call[T]) -> T:
        try:
            return call.parse(self._http.send(call.request(self._http)))
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.base_url, exc) from exc

    # -- submitting ------------------------------------------------------------------------------

    def create_batch(self, processor: str, items: list[Any] | None = None, *, input_uri: str | None = None,
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
        return self._do(call)  # type: ignore[no-any-return]

    def upload(self, file: str | os.PathLike[str] | IO[bytes], processor: str, *, filename: str | None = None,
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
                return self._do(call)  # type: ignore[no-any-return]
        call = c.upload(opts, filename or "upload", file, input_format, dry_run, idempotency_key)
        return self._do(call)  # type: ignore[no-any-return]

    def validate(self, processor: str, items: list[Any] | None = None, *, input_uri: str | None = None,
                 input_format: str | None = None, params: dict[str, Any] | None = None) -> ValidationReport:
        """Check a submission without creating anything: every problem, the item count, the estimated cost."""
        opts = c.submission(processor, params=params, parallel_jobs=1, priority="normal", max_failures=None,
                            max_failure_rate=None, max_attempts=None, description=None, tags=None, start=False)
        return self._do(c.validate(opts, items, input_uri, input_format))

    # -- reading ---------------------------------------------------------------------------------

    def list_batches(self, *, status: str | None = None, processor: str | None = None, tag: str | None = None,
                     created_after: datetime | None = None, created_before: datetime | None = None,
                     before: str | None = None, limit: int = 100) -> BatchList:
        return self._do(c.list_batches(status, processor, tag, created_after, created_before, before, limit))

    def iter_batches(self, **filters: Any) -> Iterator[BatchInfo]:
        """Every batch matching ``filters`` (those of ``list_batches``), newest first, page by page."""
        before = filters.pop("before", None)
        while True:
            page = self.list_batches(before=before, **filters)
            yield from page.batches
            if page.next_before is None:
                return
            before = page.next_before

    def get_batch(self, batch_id: str, *, include_details: bool = False) -> Batch:
        return self._do(c.get_batch(batch_id, include_details))

    def list_items(self, batch_id: str, *, status: str | None = None, after: int = 0, limit: int = 100) -> ItemList:
        return self._do(c.list_items(batch_id, status, after, limit))

    def iter_items(self, batch_id: str, *, status: str | None = None) -> Iterator[ItemInfo]:
        after = 0
        while True:
            page = self.list_items(batch_id, status=status, after=after, limit=1000)
            yield from page.items
            if page.next_after is None:
                return
            after = page.next_after

    def get_item(self, batch_id: str, item_id: str) -> ItemInfo:
        return self._do(c.get_item(batch_id, item_id))

    # -- controlling -----------------------------------------------------------------------------

    def start(self, batch_id: str) -> Batch:
        return self._do(c.control(batch_id, "start"))

    def pause(self, batch_id: str) -> Batch:
        return self._do(c.control(batch_id, "pause"))

    def set_budget(self, batch_id: str, budget: float | None, *, resume: bool = True) -> Batch:
        """Set (None: remove) the batch's budget; with ``resume``, a batch paused at its old budget continues."""
        return self._do(c.set_budget(batch_id, budget, resume))

    def estimate(self, processor: str, items: list[Any] | None = None, *, input_uri: str | None = None,
                 input_format: str | None = None, params: dict[str, Any] | None = None, parallel_jobs: int = 8,
                 sample: int = 0, seed: int | None = None, budget: float | None = None,
                 start: bool = False) -> Estimate:
        """Count, estimated cost and duration: by the cost model (nothing created), or with ``sample`` by running
        that many random items for real; the sampled batch is created (``Estimate.batch_id``), pending unless
        ``start``."""
        opts = c.submission(processor, params=params, parallel_jobs=parallel_jobs, priority="normal",
                            max_failures=None, max_failure_rate=None, max_attempts=None, description=None, tags=None,
                            start=start, budget=budget)
        return self._do(c.estimate(opts, items, input_uri, input_format, sample, seed))

    def resume(self, batch_id: str) -> Batch:
        return self._do(c.control(batch_id, "resume"))

    def cancel(self, batch_id: str) -> Batch:
        return self._do(c.control(batch_id, "cancel"))

    def retry(self, batch_id: str) -> Batch:
        return self._do(c.control(batch_id, "retry"))

    def delete_batch(self, batch_id: str) -> None:
        self._do(c.delete_batch(batch_id))

    # -- results and events ----------------------------------------------------------------------

    def results(self, batch_id: str, path: str | os.PathLike[str], *, format: str = "json",
                errors_only: bool = False) -> Path:
        """Stream a batch's results to ``path`` (written whole or not at all); returns the path."""
        target = Path(path)
        tmp = target.with_name(target.name + ".partial")
        try:
            with open(tmp, "wb") as fh:
                for chunk in self.iter_results(batch_id, format=format, errors_only=errors_only):
                    fh.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(target)
        return target

    def iter_results(self, batch_id: str, *, format: str = "json", errors_only: bool = False) -> Iterator[bytes]:
        """A batch's results in chunks as they stream from the server, to write anywhere (stdout, a socket)."""
        call = c.results(batch_id, format, errors_only)
        try:
            with self._http.stream(call.method, call.url, params=call.query,
                                   timeout=c.stream_timeout(self._http)) as r:
                if r.is_error:
                    r.read()
                    raise from_response(r)
                yield from r.iter_bytes()
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.base_url, exc) from exc

    def events(self, batch_id: str | None = None, *, last_event_id: str | None = None,
               read_timeout: float | None = None) -> Iterator[StreamEvent]:
        """The batch's live events until it is final (one connection; see ``wait`` for reconnects); with no
        ``batch_id``, the events of every batch, without end (resume with the last event's id)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with connect_sse(self._http, "GET", c.events_path(batch_id), headers=headers,
                         timeout=c.stream_timeout(self._http, read_timeout)) as es:
            if es.response.is_error:
                es.response.read()
                raise from_response(es.response)
            for sse in es.iter_sse():
                if sse.event in ("state", "progress"):
                    yield c.stream_event(sse.id, sse.event, sse.data)

    def ws_url(self, batch_id: str | None = None, *, last_event_id: str | None = None) -> str:
        """The WebSocket URL of the same events as ``events`` (for a browser or a websockets client)."""
        return c.ws_url(self.base_url, batch_id, last_event_id)

    def wait(self, batch_id: str, *, on_progress: Callable[[BatchInfo], None] | None = None,
             timeout: float | None = None) -> BatchInfo:
        """Follow the batch's events until it is final and return it; reconnects with Last-Event-ID."""
        w = c.Waiter(batch_id, timeout, on_progress)
        while True:
            try:
                for ev in self.events(batch_id, last_event_id=w.last, read_timeout=w.read_timeout()):
                    if (final := w.see(ev)) is not None:
                        return final
            except httpx.TransportError:
                pass  # the connection dropped: resume from the last event seen
            w.check()
            time.sleep(RECONNECT_SECONDS)

    # -- the server ------------------------------------------------------------------------------

    def recover(self) -> RecoverResult:
        """Recover interrupted work now: dead workers' items go back to pending (as at start-up)."""
        return self._do(c.recover())

    def webhook_deliveries(self, batch_id: str) -> list[WebhookDelivery]:
        """The batch's webhook deliveries, oldest first, with every attempt."""
        return self._do(c.webhook_deliveries(batch_id))

    def timeline(self, batch_id: str, *, bucket_seconds: float | None = None) -> list[TimelinePoint]:
        """Succeeded and failed items per time bucket (by when they finished), oldest first: the
        dashboard's throughput chart. At most 200 points; ``bucket_seconds`` asks for a width."""
        return self._do(c.timeline(batch_id, bucket_seconds))

    def cleanup(self, days_old: float) -> CleanupResult:
        return self._do(c.cleanup(days_old))

    def processors(self) -> list[ProcessorInfo]:
        return self._do(c.processors())

    def health(self) -> Health:
        return self._do(c.health())

    def metrics(self) -> str:
        return self._do(c.metrics())
