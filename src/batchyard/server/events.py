"""Live events: one batch's, or every batch of the caller's tenant, over Server-Sent Events or a WebSocket.

* ``GET /batches/{id}/events`` (SSE) and ``/batches/{id}/ws`` (WebSocket): one batch. The loop polls the
  store's O(1) ``get_batch`` (so it works the same when items run in another process) and sends an
  event only when something changed, at most once per ``events_interval_s``: ``state`` when the status
  changes, ``progress`` when the counters do. Each event's id is ``<updated_at in µs>-<status>``; a client
  reconnecting with it (``Last-Event-ID``, or ``?last_event_id=`` on the WebSocket) gets only what
  changed since (a coalesced snapshot, never a replay of every step). After the final state the stream
  ends (the WebSocket closes with 1000).
* ``GET /events`` (SSE) and ``/ws`` (WebSocket): every batch of the tenant, for dashboards. The loop
  polls ``list_batches(updated_after=...)`` and sends each changed batch at most once per interval.
  Event ids are ``<high-water updated_at in µs>-<batch id>``; resuming from one sends every batch
  changed since (at least once: a batch changed just before the id may come again).

Both loops are transport-free generators of ``Event``; the SSE and WebSocket routes only encode them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, WebSocket
from fastapi.routing import APIWebSocketRoute
from sse_starlette.sse import EventSourceResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocketDisconnect, WebSocketState

from batchyard.core import defaults
from batchyard.core.engine import Engine
from batchyard.core.errors import NotFound
from batchyard.core.models import BatchInfo
from batchyard.core.states import is_final
from batchyard.core.store import Store
from batchyard.server import errors
from batchyard.server.deps import engine_of, owned, settings_of, tenant_of
from batchyard.server.errors import ERROR_RESPONSES
from batchyard.server.schemas import BatchEvent

router = APIRouter(tags=["events"])

Kind = Literal["state", "progress"]
Disconnected = Callable[[], Awaitable[bool]]
WS_NOT_FOUND = 4404  # 4000-4999 are the application's close codes; 4xxx mirrors the HTTP status

# A writer stamps updated_at before it waits for the write lock (up to the busy timeout), so a change can
# become visible with an updated_at up to that far behind changes already seen. The server-wide loop
# re-reads that far back now and then (and a second back on every poll) so that such a change is late,
# never lost; what it re-reads and has already sent is skipped.
LOOKBACK_S = defaults.SQLITE_BUSY_TIMEOUT_MS / 1000 + 1.0
SHORT_LOOKBACK_S = 1.0
DEEP_EVERY_S = 5.0
PAGE = 500


def _sse_schema(id_description: str) -> dict[str, Any]:
    """One event of a stream (OpenAPI 3.2's shape for text/event-stream); its data is a BatchEvent in JSON."""
    return {
        "type": "object",
        "required": ["event", "id", "data"],
        "properties": {
            "event": {"type": "string", "enum": ["state", "progress"]},
            "id": {"type": "string", "description": id_description},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": {"$ref": "#/components/schemas/BatchEvent"}},
        },
    }


SSE_EVENT = _sse_schema("<updated_at in µs>-<status>: send it back as Last-Event-ID")
SSE_TENANT_EVENT = _sse_schema("<high-water updated_at in µs>-<batch id>: send it back as Last-Event-ID")


def add_schemas(openapi: dict[str, Any], routes: Iterable[BaseRoute] = ()) -> dict[str, Any]:
    """Put BatchEvent (the events' data, which no response_model names) into the OpenAPI components, and
    list the WebSocket routes (which OpenAPI cannot describe) under ``x-websockets``, so that clients and
    the client's coverage test see them."""
    schema = BatchEvent.model_json_schema(ref_template="#/components/schemas/{model}")
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components["BatchEvent"] = schema
    sockets = {}
    for path, doc in websocket_routes(routes):
        summary, _, description = (doc or path).strip().partition("\n")
        sockets[path] = {"summary": summary.strip(), "description": " ".join(description.split())}
    if sockets:
        openapi["x-websockets"] = dict(sorted(sockets.items()))
    return openapi


def websocket_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str | None]]:
    """(path, docstring) of every WebSocket route, inside included routers too: recent FastAPI keeps an
    included router whole (with its prefix) instead of copying its routes into the app."""
    for route in routes:
        if isinstance(route, WebSocketRoute | APIWebSocketRoute):
            yield prefix + route.path, route.endpoint.__doc__
        context = getattr(route, "include_context", None)
        if context is not None:
            yield from websocket_routes(context.included_router.routes, prefix + context.prefix)


@dataclass(frozen=True)
class Event:
    """One event, before it is encoded for a transport."""

    kind: Kind
    id: str
    batch: BatchInfo

    @property
    def data(self) -> BatchEvent:
        return BatchEvent(type=self.kind, batch=self.batch)

    def sse(self) -> dict[str, Any]:
        return {"event": self.kind, "id": self.id, "data": self.data.model_dump_json()}

    def ws(self) -> str:
        return json.dumps({"event": self.kind, "id": self.id, "data": self.data.model_dump(mode="json")})


def _us(info: BatchInfo) -> int:
    return int(info.updated_at.timestamp() * 1_000_000)


def event_id(info: BatchInfo) -> str:
    return f"{_us(info)}-{info.status.value}"


def parse_id(value: str | None) -> tuple[int, str] | None:
    """A per-batch event id: (updated_at in µs, status), or None if absent or malformed."""
    if not value:
        return None
    stamp, _, status = value.partition("-")
    return (int(stamp), status) if stamp.isdigit() and status else None


def parse_mark(value: str | None) -> float | None:
    """A server-wide event id's high-water mark in seconds, or None if absent or malformed."""
    stamp = (value or "").partition("-")[0]
    return int(stamp) / 1_000_000 if stamp.isdigit() else None


async def _never() -> bool:
    return False


# -- one batch -----------------------------------------------------------------------------------


def _changes(info: BatchInfo, last: tuple[int, str] | None) -> list[Kind]:
    """The event types ``info`` calls for, given the last event sent (or seen by the client)."""
    if last is None or info.status.value != last[1]:
        return ["state"]
    return ["progress"] if _us(info) > last[0] else []


async def batch_events(engine: Engine, batch_id: str, last: tuple[int, str] | None, interval: float,
                       is_disconnected: Disconnected = _never) -> AsyncIterator[Event]:
    """A batch's events until its final state, its deletion or the client leaving."""
    while True:
        try:
            info = await asyncio.to_thread(engine.status, batch_id)
        except NotFound:  # deleted while watched: nothing more will happen
            return
        for kind in _changes(info, last):
            yield Event(kind, event_id(info), info)
            last = (_us(info), info.status.value)
        if info.is_final or await is_disconnected():
            return
        await asyncio.sleep(interval)


# -- every batch of a tenant ---------------------------------------------------------------------


def changed_since(store: Store, tenant: str, mark: float) -> list[BatchInfo]:
    """Every batch of ``tenant`` changed at or after ``mark``, oldest change first, page by page."""
    found: dict[str, BatchInfo] = {}
    limit = PAGE
    while True:
        page = store.list_batches(tenant=tenant, updated_after=mark, limit=limit)
        found.update((b.batch_id, b) for b in page)  # a batch changed while paging: its latest wins
        if len(page) < limit:
            return sorted(found.values(), key=lambda b: b.updated_at)
        # updated_after is inclusive, so ties with the last row are read again (and merged above);
        # 1 µs under it absorbs the rounding of updated_at to a datetime.
        nxt = page[-1].updated_at.timestamp() - 1e-6
        if nxt <= mark:  # a whole page of one timestamp: read a bigger page from the same mark
            limit *= 2
        mark = max(mark, nxt)


async def tenant_events(store: Store, tenant: str, since: float | None, interval: float,
                        is_disconnected: Disconnected = _never) -> AsyncIterator[Event]:
    """Every change to the tenant's batches from ``since`` (default: now, less the look-back), forever."""
    high = time.time() if since is None else since
    sent: dict[str, tuple[float, str]] = {}  # batch id -> (updated_at, status) of the last event sent
    next_deep = 0.0
    while True:
        deep = time.monotonic() >= next_deep
        if deep:
            next_deep = time.monotonic() + DEEP_EVERY_S
        for info in await asyncio.to_thread(changed_since, store, tenant,
                                             high - (LOOKBACK_S if deep else SHORT_LOOKBACK_S)):
            stamp, status = info.updated_at.timestamp(), info.status.value
            prev = sent.get(info.batch_id)
            if prev == (stamp, status):
                continue  # re-read by the look-back, already sent
            kind: Kind = "progress" if prev is not None and prev[1] == status else "state"
            high = max(high, stamp)
            sent[info.batch_id] = (stamp, status)
            yield Event(kind, f"{int(high * 1_000_000)}-{info.batch_id}", info)
        # Forget final batches the look-back no longer reaches; keep live ones, so that their next change
        # is still told as progress rather than as a new state.
        floor = high - LOOKBACK_S
        for batch_id in [k for k, (t, s) in sent.items() if t < floor and is_final(s)]:
            del sent[batch_id]
        if await is_disconnected():
            return
        await asyncio.sleep(interval)


# -- transports ----------------------------------------------------------------------------------


def _sse(request: Request, events: AsyncIterator[Event]) -> EventSourceResponse:
    async def encoded() -> AsyncIterator[dict[str, Any]]:
        async for ev in events:
            yield ev.sse()

    return EventSourceResponse(encoded(), ping=int(settings_of(request).events_ping_s))


async def _send_all(ws: WebSocket, make: Callable[[Disconnected], AsyncIterator[Event]]) -> tuple[Event | None, bool]:
    """Send every event of ``make(is_disconnected)`` as a JSON text message; returns the last one sent and
    whether the client left. A reader task watches for the client's close, which a stream waiting for
    changes would otherwise only notice at its next send."""
    gone = asyncio.Event()

    async def watch() -> None:
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass  # clients have nothing to say; messages are ignored
        gone.set()  # not reached when cancelled: the stream ended first

    async def is_disconnected() -> bool:
        return gone.is_set()

    watcher = asyncio.create_task(watch())
    last: Event | None = None
    try:
        async for ev in make(is_disconnected):
            await ws.send_text(ev.ws())
            last = ev
    except (WebSocketDisconnect, OSError, RuntimeError):  # the client went away between two sends
        gone.set()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
    return last, gone.is_set()


async def _close_not_found(ws: WebSocket, exc: NotFound) -> None:
    """The HTTP 404 of a WebSocket: the same error body as a message, then close code 4404."""
    _, content = errors.describe(exc)
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await ws.send_text(json.dumps(content))
        await ws.close(WS_NOT_FOUND, reason=content["error"]["code"])


async def _close(ws: WebSocket, code: int = 1000) -> None:
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await ws.close(code)


# -- routes --------------------------------------------------------------------------------------


@router.get("/batches/{batch_id}/events", summary="Live state and progress events (Server-Sent Events)",
            description="The same events as JSON text messages over a WebSocket: `/api/v1/batches/{batch_id}/ws` "
                        "(resume with `?last_event_id=`).",
            response_class=EventSourceResponse, responses={
                200: {"description": "An event stream; each event's data is a BatchEvent",
                      "content": {"text/event-stream": {"schema": SSE_EVENT}}},
                404: ERROR_RESPONSES[404]})
def events(batch_id: str, request: Request,
           last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None) -> EventSourceResponse:
    owned(request, batch_id)  # 404 before the stream starts
    return _sse(request, batch_events(engine_of(request), batch_id, parse_id(last_event_id),
                                      settings_of(request).events_interval_s, request.is_disconnected))


@router.websocket("/batches/{batch_id}/ws")
async def batch_ws(websocket: WebSocket, batch_id: str, last_event_id: str | None = None) -> None:
    """Live state and progress events of a batch (WebSocket)

    JSON text messages ``{"event", "id", "data": BatchEvent}``, the events of ``GET .../events``; resume with
    ``?last_event_id=``. Closes with 1000 after the final state; with 4404, after an error message, for a
    batch that is not the caller's or that is deleted while watched."""
    await websocket.accept()
    try:
        await asyncio.to_thread(owned, websocket, batch_id)
    except NotFound as exc:
        await _close_not_found(websocket, exc)
        return
    engine, interval = engine_of(websocket), settings_of(websocket).events_interval_s
    _, gone = await _send_all(websocket, lambda disconnected: batch_events(
        engine, batch_id, parse_id(last_event_id), interval, disconnected))
    if gone:
        return
    # The loop ends at the final state (sent, or seen before when resuming past it) or when the batch is gone.
    try:
        await asyncio.to_thread(engine.status, batch_id)
    except NotFound as exc:
        await _close_not_found(websocket, exc)
        return
    await _close(websocket)


@router.get("/events", summary="Live events of every batch (Server-Sent Events)",
            description="Every change to the caller's batches, for dashboards: `state` when a batch is new to the "
                        "stream or changes status, `progress` when its counters change, each batch at most once per "
                        "poll interval. A new stream starts with the batches changed in the last few seconds; "
                        "`Last-Event-ID` resumes from an event (at least once). The same over a WebSocket: "
                        "`/api/v1/ws` (resume with `?last_event_id=`).",
            response_class=EventSourceResponse, responses={
                200: {"description": "An event stream that does not end; each event's data is a BatchEvent",
                      "content": {"text/event-stream": {"schema": SSE_TENANT_EVENT}}}})
def all_events(request: Request,
               last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None) -> EventSourceResponse:
    return _sse(request, tenant_events(engine_of(request).store, tenant_of(request), parse_mark(last_event_id),
                                       settings_of(request).events_interval_s, request.is_disconnected))


@router.websocket("/ws")
async def all_ws(websocket: WebSocket, last_event_id: str | None = None) -> None:
    """Live events of every batch (WebSocket)

    JSON text messages ``{"event", "id", "data": BatchEvent}``, the events of ``GET /events``, until the
    client leaves; resume with ``?last_event_id=``."""
    await websocket.accept()
    store, tenant = engine_of(websocket).store, tenant_of(websocket)
    interval = settings_of(websocket).events_interval_s
    await _send_all(websocket, lambda disconnected: tenant_events(
        store, tenant, parse_mark(last_event_id), interval, disconnected))
    await _close(websocket)
