"""Every API operation as a request to build and a parser for its answer, shared by Client and AsyncClient.

``OPERATIONS`` maps each (method, path) of the API to the client method that calls it, and ``WEBSOCKETS``
each WebSocket path (listed by the server under ``x-websockets`` in its OpenAPI schema) to the client method
that serves it; a test checks both against a real server's schema so that no endpoint is left without a
method, and the client names none the server lacks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from batchyard.client.errors import from_response
from batchyard.core.models import BatchInfo, Estimate, FailurePolicy, ItemInfo, TimelinePoint, WebhookDelivery
from batchyard.server.schemas import (
    API_PREFIX,
    Batch,
    BatchEvent,
    BatchList,
    BudgetUpdate,
    CleanupRequest,
    CleanupResult,
    DeliveryList,
    Health,
    ItemList,
    ProcessorInfo,
    ProcessorList,
    RecoverResult,
    Timeline,
    ValidationReport,
)

T = TypeVar("T")

OPERATIONS: dict[tuple[str, str], str] = {
    ("POST", "/batches"): "create_batch",
    ("POST", "/batches/upload"): "upload",
    ("POST", "/batches/validate"): "validate",
    ("POST", "/batches/estimate"): "estimate",
    ("POST", "/batches/{batch_id}/budget"): "set_budget",
    ("GET", "/batches"): "list_batches",
    ("GET", "/batches/{batch_id}"): "get_batch",
    ("GET", "/batches/{batch_id}/items"): "list_items",
    ("GET", "/batches/{batch_id}/items/{item_id}"): "get_item",
    ("POST", "/batches/{batch_id}/start"): "start",
    ("POST", "/batches/{batch_id}/pause"): "pause",
    ("POST", "/batches/{batch_id}/resume"): "resume",
    ("POST", "/batches/{batch_id}/cancel"): "cancel",
    ("POST", "/batches/{batch_id}/retry"): "retry",
    ("DELETE", "/batches/{batch_id}"): "delete_batch",
    ("GET", "/batches/{batch_id}/results"): "results",
    ("GET", "/batches/{batch_id}/events"): "events",
    ("GET", "/events"): "events",
    ("GET", "/batches/{batch_id}/webhooks"): "webhook_deliveries",
    ("GET", "/batches/{batch_id}/timeline"): "timeline",
    ("POST", "/batches/recover"): "recover",
    ("POST", "/batches/cleanup"): "cleanup",
    ("GET", "/processors"): "processors",
    ("GET", "/health"): "health",
    ("GET", "/metrics"): "metrics",
}

WEBSOCKETS: dict[str, str] = {
    "/batches/{batch_id}/ws": "ws_url",
    "/ws": "ws_url",
}


def auth_headers(api_key: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    """The client's default headers: ``headers`` plus the API key (``api_key``, else ``$BATCHYARD_API_KEY``)
    as a bearer token. Set on the httpx client itself, so every request carries it, event streams included."""
    key = os.environ.get("BATCHYARD_API_KEY") if api_key is None else api_key
    merged = dict(headers or {})
    if key:
        merged["Authorization"] = f"Bearer {key}"
    return merged


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    data: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    headers: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return API_PREFIX + self.path

    @property
    def query(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if v is not None}

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return http.build_request(self.method, self.url, params=self.query, json=self.json, data=self.data,
                                  files=self.files, headers=self.headers)


@dataclass(frozen=True)
class StreamEvent:
    """One SSE event: its id (for resuming), its type (``state`` or ``progress``) and the batch then."""

    id: str
    type: str
    batch: BatchInfo


def check(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise from_response(response)
    return response


def model(cls: type[T]) -> Callable[[httpx.Response], T]:
    return lambda r: cls.model_validate_json(check(r).content)  # type: ignore[attr-defined, no-any-return]


def _none(r: httpx.Response) -> None:
    check(r)


def _bool(value: bool | None) -> str | None:
    return None if value is None else str(value).lower()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def submission(processor: str, *, params: dict[str, Any] | None, parallel_jobs: int, priority: str,
               max_failures: int | None, max_failure_rate: float | None, max_attempts: int | None,
               description: str | None, tags: list[str] | None, start: bool,
               webhook: str | dict[str, Any] | None = None, budget: float | None = None) -> dict[str, Any]:
    return {"processor": processor, "params": params or {}, "parallel_jobs": parallel_jobs, "priority": priority,
            "failure_policy": FailurePolicy.model_construct(max_failures=max_failures,
                                                            max_failure_rate=max_failure_rate),
            "max_attempts": max_attempts, "description": description, "tags": tags or [], "start": start,
            "webhook": webhook, "budget": budget}


def _body(opts: dict[str, Any], **more: Any) -> dict[str, Any]:
    """A BatchCreate body, unvalidated: the server checks it and answers 422 with every problem."""
    body = {**opts, **more, "failure_policy": opts["failure_policy"].model_dump(exclude_none=True)}
    return {k: v for k, v in body.items() if v is not None}


def _idempotency(key: str | None) -> dict[str, str] | None:
    return {"Idempotency-Key": key} if key is not None else None


def create_batch(opts: dict[str, Any], items: list[Any] | None, input_uri: str | None,
                 input_format: str | None, dry_run: bool = False, idempotency_key: str | None = None) -> Call[Any]:
    parse = model(ValidationReport) if dry_run else model(Batch)
    return Call("POST", "/batches", parse, json=_body(opts, items=items, input_uri=input_uri,
                                                      input_format=input_format, dry_run=dry_run),
                headers=_idempotency(idempotency_key))


def validate(opts: dict[str, Any], items: list[Any] | None, input_uri: str | None,
             input_format: str | None) -> Call[ValidationReport]:
    return Call("POST", "/batches/validate", model(ValidationReport),
                json=_body(opts, items=items, input_uri=input_uri, input_format=input_format))


def estimate(opts: dict[str, Any], items: list[Any] | None, input_uri: str | None, input_format: str | None,
             sample: int, seed: int | None) -> Call[Estimate]:
    return Call("POST", "/batches/estimate", model(Estimate),
                json=_body(opts, items=items, input_uri=input_uri, input_format=input_format, sample=sample or None,
                           seed=seed))


def set_budget(batch_id: str, budget: float | None, resume: bool) -> Call[Batch]:
    return Call("POST", f"/batches/{batch_id}/budget", model(Batch),
                json=BudgetUpdate(budget=budget, resume=resume).model_dump())


def upload(opts: dict[str, Any], filename: str, content: Any, input_format: str | None,
           dry_run: bool = False, idempotency_key: str | None = None) -> Call[Any]:
    policy: FailurePolicy = opts["failure_policy"]
    data = {"processor": opts["processor"], "params": json.dumps(opts["params"]),
            "parallel_jobs": str(opts["parallel_jobs"]), "priority": str(opts["priority"]),
            "max_failures": policy.max_failures, "max_failure_rate": policy.max_failure_rate,
            "max_attempts": opts["max_attempts"], "description": opts["description"],
            "tags": opts["tags"] or None, "start": _bool(opts["start"]), "dry_run": _bool(dry_run),
            "input_format": input_format, "budget": opts.get("budget")}
    hook = opts.get("webhook")
    if hook is not None:  # a form has no objects: the webhook is two fields
        hook = {"url": hook} if isinstance(hook, str) else hook
        data.update(webhook_url=hook["url"], webhook_progress=_bool(bool(hook.get("progress"))))
    data = {k: (v if isinstance(v, list) else str(v)) for k, v in data.items() if v is not None}
    parse = model(ValidationReport) if dry_run else model(Batch)
    return Call("POST", "/batches/upload", parse, data=data, files={"file": (filename, content)},
                headers=_idempotency(idempotency_key))


def list_batches(status: str | None, processor: str | None, tag: str | None, created_after: datetime | None,
                 created_before: datetime | None, before: str | None, limit: int) -> Call[BatchList]:
    return Call("GET", "/batches", model(BatchList), params={
        "status": status, "processor": processor, "tag": tag, "created_after": _iso(created_after),
        "created_before": _iso(created_before), "before": before, "limit": limit})


def get_batch(batch_id: str, include_details: bool) -> Call[Batch]:
    return Call("GET", f"/batches/{batch_id}", model(Batch),
                params={"include_details": _bool(include_details) if include_details else None})


def list_items(batch_id: str, status: str | None, after: int, limit: int) -> Call[ItemList]:
    return Call("GET", f"/batches/{batch_id}/items", model(ItemList),
                params={"status": status, "after": after or None, "limit": limit})


def get_item(batch_id: str, item_id: str) -> Call[ItemInfo]:
    return Call("GET", f"/batches/{batch_id}/items/{item_id}", model(ItemInfo))


def control(batch_id: str, action: str) -> Call[Batch]:
    return Call("POST", f"/batches/{batch_id}/{action}", model(Batch))


def delete_batch(batch_id: str) -> Call[None]:
    return Call("DELETE", f"/batches/{batch_id}", _none)


def results(batch_id: str, format: str, errors_only: bool) -> Call[None]:
    return Call("GET", f"/batches/{batch_id}/results", _none,
                params={"format": format, "errors_only": _bool(errors_only) if errors_only else None})


def recover() -> Call[RecoverResult]:
    return Call("POST", "/batches/recover", model(RecoverResult))


def webhook_deliveries(batch_id: str) -> Call[list[WebhookDelivery]]:
    return Call("GET", f"/batches/{batch_id}/webhooks",
                lambda r: DeliveryList.model_validate_json(check(r).content).deliveries)


def timeline(batch_id: str, bucket_seconds: float | None) -> Call[list[TimelinePoint]]:
    return Call("GET", f"/batches/{batch_id}/timeline",
                lambda r: Timeline.model_validate_json(check(r).content).points,
                params={"bucket_seconds": bucket_seconds})


def cleanup(days_old: float) -> Call[CleanupResult]:
    return Call("POST", "/batches/cleanup", model(CleanupResult), json=CleanupRequest(days_old=days_old).model_dump())


def processors() -> Call[list[ProcessorInfo]]:
    return Call("GET", "/processors", lambda r: ProcessorList.model_validate_json(check(r).content).processors)


def health() -> Call[Health]:
    def parse(r: httpx.Response) -> Health:
        if r.status_code == 503:  # degraded: still a Health report
            return Health.model_validate_json(r.content)
        return Health.model_validate_json(check(r).content)

    return Call("GET", "/health", parse)


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda r: check(r).text)


def stream_timeout(http: httpx.Client | httpx.AsyncClient, read: float | None = None) -> httpx.Timeout:
    """Long-lived responses: no read timeout unless a deadline asks for one."""
    return httpx.Timeout(http.timeout.connect, read=read)


def events_path(batch_id: str | None) -> str:
    """One batch's event stream, or every batch's with ``batch_id=None``."""
    return f"{API_PREFIX}/batches/{batch_id}/events" if batch_id is not None else f"{API_PREFIX}/events"


def ws_url(base_url: str, batch_id: str | None, last_event_id: str | None) -> str:
    """The WebSocket carrying the same events as ``events_path`` (ws:// for http://, wss:// for https://)."""
    url = httpx.URL(base_url)
    path = f"/batches/{batch_id}/ws" if batch_id is not None else "/ws"
    scheme = "wss" if url.scheme == "https" else "ws"
    params = {"last_event_id": last_event_id} if last_event_id else None
    return str(url.copy_with(scheme=scheme, path=url.path.rstrip("/") + API_PREFIX + path, params=params))


def stream_event(sse_id: str, sse_event: str, data: str) -> StreamEvent:
    ev = BatchEvent.model_validate_json(data)
    return StreamEvent(id=sse_id, type=sse_event or ev.type, batch=ev.batch)


WAIT_CHECK_SECONDS = 5.0


class Waiter:
    """What ``wait`` keeps across reconnects, shared by Client and AsyncClient: the last event id,
    the last status seen, the deadline."""

    def __init__(self, batch_id: str, timeout: float | None,
                 on_progress: Callable[[BatchInfo], None] | None) -> None:
        self.batch_id, self.timeout, self.on_progress = batch_id, timeout, on_progress
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last: str | None = None
        self.info: BatchInfo | None = None

    def read_timeout(self) -> float | None:
        # The server's keep-alive pings reset a read timeout, so one as long as the time left could let
        # a quiet stream run far past the deadline; a few seconds at most makes the caller reconnect
        # (resuming from the last event) and check the deadline.
        if self.deadline is None:
            return None
        return min(max(self.deadline - time.monotonic(), 0.05), WAIT_CHECK_SECONDS)

    def see(self, ev: StreamEvent) -> BatchInfo | None:
        """Take one event; the batch if it is final, else None (TimeoutError past the deadline)."""
        self.last, self.info = ev.id, ev.batch
        if self.on_progress:
            self.on_progress(ev.batch)
        # A batch paused at its budget waits for someone to raise it: waiting here would never end.
        if ev.batch.is_final or (ev.batch.status == "paused" and ev.batch.pause_reason == "budget_reached"):
            return ev.batch
        self.check()
        return None

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            seen = f" (last seen {self.info.status})" if self.info else ""
            raise TimeoutError(f"{self.batch_id} not final after {self.timeout}s{seen}")
