"""What both stores share: reading rows into models, per-processor statistics, process liveness."""

from __future__ import annotations

import bisect
import io
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import IO, Any, TypeVar

import psutil
from pydantic import BaseModel

from batchyard.core import cost, defaults
from batchyard.core.models import RANK_PRIORITY, WEBHOOK_EVENTS, BatchInfo, ItemError, ResourceInfo, ts
from batchyard.core.states import BatchStatus

M = TypeVar("M", bound=BaseModel)

FINAL_EVENTS = {BatchStatus.COMPLETED: WEBHOOK_EVENTS[0], BatchStatus.FAILED: WEBHOOK_EVENTS[1],
                BatchStatus.CANCELLED: WEBHOOK_EVENTS[2]}
_BOUNDS_US = [int(b * 1_000_000) for b in defaults.DURATION_BUCKETS]


class Stats:
    """One group commit's contribution to a processor's totals."""

    def __init__(self) -> None:
        self.ok = self.fail = self.retry = 0
        self.duration_sum = 0.0
        self.counts = [0] * (len(_BOUNDS_US) + 1)

    def add(self, c: dict[str, float], durations_us: Iterable[int]) -> None:
        self.ok += int(c["ok"])
        self.fail += int(c["fail"])
        self.retry += int(c["retry"])
        counts, bounds, total = self.counts, _BOUNDS_US, 0
        for d in durations_us:
            counts[bisect.bisect_left(bounds, d)] += 1
            total += d
        self.duration_sum += total / 1e6

    def merged(self, old: list[int]) -> list[int]:
        if len(old) != len(self.counts):  # first write, or the bucket bounds changed: start again
            return list(self.counts)
        return [a + b for a, b in zip(old, self.counts, strict=True)]


def process_alive(pid: int, started: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        return started is None or abs(proc.create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def construct(cls: type[M], **values: Any) -> M:
    """``cls.model_construct(**values)`` in a quarter of the time, for rows read back from the store (validated
    on the way in) when ``values`` names every field: pydantic's own walks the fields and their defaults for
    each object, which is most of the cost of a page of items (status polls, exports). Otherwise, or should a
    field be added with a default, pydantic's own."""
    if len(values) != len(cls.model_fields):
        return cls.model_construct(**values)
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def error_from(d: dict[str, Any] | None) -> ItemError | None:
    if not d:
        return None
    return ItemError.model_construct(type=d.get("type", "Error"), message=d.get("message", ""),
                                     traceback=d.get("traceback"), attempt=d.get("attempt"),
                                     at=ts(d["at"]) if d.get("at") else None)


def batch_info(r: Mapping[str, Any], spec: dict[str, Any], active: float, created: datetime | None,
               started: datetime | None, completed: datetime | None, updated: datetime | None) -> BatchInfo:
    """A batch row (the same columns in both stores) as the model; times already converted by the store."""
    return BatchInfo(
        batch_id=r["id"], tenant=r["tenant"], processor=r["processor"], status=r["status"],
        pause_reason=r["pause_reason"], status_reason=r["status_reason"],
        priority=RANK_PRIORITY[r["priority"]], parallel=r["parallel"], params=spec.get("params") or {},
        failure_policy=spec.get("failure_policy") or {}, max_attempts=r["max_attempts"],
        webhook=spec.get("webhook"), description=spec.get("description"), tags=spec.get("tags") or [],
        source=spec.get("source"), fingerprint=r["fingerprint"],
        items_total=r["items_total"], items_pending=r["items_pending"], items_running=r["items_running"],
        items_succeeded=r["items_succeeded"], items_failed=r["items_failed"],
        items_cancelled=r["items_cancelled"], attempts_total=r["attempts_total"],
        cost_total=r["cost_total"], cost_unit=spec.get("cost_unit") or "USD",
        cost_estimated=cost.estimate_total(r["cost_estimated"], spec.get("cost_per_item"), r["items_total"]),
        budget=r["budget"], resource=resource_info(r), throttled=throttle_note(r),
        created_at=created, started_at=started, completed_at=completed, updated_at=updated, active_seconds=active)


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def content_size(content: bytes | IO[bytes]) -> tuple[int, IO[bytes]]:
    """The size of what is left to read, and a binary file to read it from."""
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        return len(data), io.BytesIO(data)
    start = content.tell()
    end = content.seek(0, io.SEEK_END)
    content.seek(start)
    return end - start, content


def expected_cost(r: Mapping[str, Any], spec: Mapping[str, Any]) -> float | None:
    """What one more item of the batch row ``r`` is expected to cost (see ``core.cost``)."""
    total = cost.estimate_total(r["cost_estimated"], spec.get("cost_per_item"), r["items_total"])
    return cost.per_item(total, r["items_total"], r["cost_total"], r["items_succeeded"] + r["items_failed"])


def budget_allowance(r: Mapping[str, Any], spec: Mapping[str, Any]) -> int | None:
    """How many more items of the batch row ``r`` may start under its budget (None: no budget)."""
    if r["budget"] is None:
        return None
    return cost.allowance(r["budget"], r["cost_total"], r["items_running"], expected_cost(r, spec))


def budget_reached(r: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Whether the running batch row ``r`` must pause for its budget (``core.cost.budget_reached``)."""
    return r["budget"] is not None and cost.budget_reached(
        r["budget"], r["cost_total"], r["items_pending"], r["items_running"], expected_cost(r, spec))


def startable_items(pending: int, tokens: float | None, allowance: int | None) -> int:
    """Items of a batch that may start now: pending, within its processor's rate tokens and its budget.

    A rate-limited batch counts as able to start one even with no token yet: it keeps a slot, so its worker
    asks again each cycle and takes the next token when it is due, instead of retiring the batch and coming
    back at its idle poll (seconds later on PostgreSQL), which left a small bucket mostly unused."""
    n = pending if tokens is None else min(pending, max(1, int(tokens)))
    return n if allowance is None else min(n, allowance)


def resource_info(r: Mapping[str, Any]) -> ResourceInfo | None:
    """The batch row's resource columns as the model (SQLite keeps the state as text, PostgreSQL as jsonb)."""
    if r["resource_status"] is None:
        return None
    state = r["resource_state"]
    return ResourceInfo(status=r["resource_status"], state=json.loads(state) if isinstance(state, str) else state,
                        capacity=r["resource_capacity"], used=r["resource_used"] or 0.0)


def throttle_note(r: Mapping[str, Any]) -> str | None:
    """A running batch's throttle note while its worker keeps refreshing it (a note a worker left when it died
    stops showing once it is a lease old)."""
    if r["throttle"] is None or r["status"] != BatchStatus.RUNNING or r["throttle_at"] is None:
        return None
    return r["throttle"] if time.time() - r["throttle_at"] < defaults.LEASE_SECONDS else None
