"""``GET /batches/{id}/events``: Server-Sent Events of a batch's state changes and progress.

The stream polls the store's O(1) ``get_batch`` (so it works the same when items run in another
process) and sends an event only when something changed, at most once per ``events_interval_s``:
``state`` when the status changes, ``progress`` when the counters do. Each event's id is
``<updated_at in µs>-<status>``; a client reconnecting with ``Last-Event-ID`` gets only what changed
since that event (a coalesced snapshot, never a replay of every step). After the final state the stream ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sse_starlette.sse import EventSourceResponse

from batchyard.core.errors import NotFound
from batchyard.core.models import BatchInfo
from batchyard.server.deps import engine_of, owned, settings_of
from batchyard.server.errors import ERROR_RESPONSES
from batchyard.server.schemas import BatchEvent

router = APIRouter(prefix="/batches", tags=["events"])

# One event of the stream (OpenAPI 3.2's shape for text/event-stream); its data is a BatchEvent in JSON.
SSE_EVENT = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["state", "progress"]},
        "id": {"type": "string", "description": "<updated_at in µs>-<status>: send it back as Last-Event-ID"},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"$ref": "#/components/schemas/BatchEvent"}},
    },
}


def add_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put BatchEvent (the events' data, which no response_model names) into the OpenAPI components."""
    schema = BatchEvent.model_json_schema(ref_template="#/components/schemas/{model}")
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components["BatchEvent"] = schema
    return openapi


def event_id(info: BatchInfo) -> str:
    return f"{int(info.updated_at.timestamp() * 1_000_000)}-{info.status.value}"


def parse_id(value: str | None) -> tuple[int, str] | None:
    if not value:
        return None
    stamp, _, status = value.partition("-")
    return (int(stamp), status) if stamp.isdigit() and status else None


def _changes(info: BatchInfo, last: tuple[int, str] | None) -> list[str]:
    """The event types ``info`` calls for, given the last event sent (or seen by the client)."""
    if last is None:
        return ["state"]
    stamp = int(info.updated_at.timestamp() * 1_000_000)
    if info.status.value != last[1]:
        return ["state"]
    return ["progress"] if stamp > last[0] else []


def _message(kind: str, info: BatchInfo) -> dict[str, Any]:
    return {"event": kind, "id": event_id(info), "data": BatchEvent(type=kind, batch=info).model_dump_json()}  # type: ignore[arg-type]


async def batch_events(request: Request, batch_id: str, last: tuple[int, str] | None) -> AsyncIterator[dict[str, Any]]:
    engine, interval = engine_of(request), settings_of(request).events_interval_s
    while True:
        try:
            info = await asyncio.to_thread(engine.status, batch_id)
        except NotFound:  # deleted while watched: nothing more will happen
            return
        for kind in _changes(info, last):
            yield _message(kind, info)
            last = (int(info.updated_at.timestamp() * 1_000_000), info.status.value)
        if info.is_final or await request.is_disconnected():
            return
        await asyncio.sleep(interval)


@router.get("/{batch_id}/events", summary="Live state and progress events (Server-Sent Events)",
            response_class=EventSourceResponse, responses={
                200: {"description": "An event stream; each event's data is a BatchEvent",
                      "content": {"text/event-stream": {"schema": SSE_EVENT}}},
                404: ERROR_RESPONSES[404]})
def events(batch_id: str, request: Request,
           last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None) -> EventSourceResponse:
    owned(request, batch_id)  # 404 before the stream starts
    return EventSourceResponse(batch_events(request, batch_id, parse_id(last_event_id)),
                               ping=int(settings_of(request).events_ping_s))
