"""Outputs: a batch's results as JSON, CSV or JSONL, streamed from the store, with a summary.

Everything streams: items are read from the store a page at a time and written as they come, so a
million-item batch exports in flat memory. A batch that is still running exports what is done so far
(items in a final state), marked ``"partial": true``. ``errors_only`` writes the failed items alone.

- JSON: ``{batch_id, status, partial, summary, results: [...]}``.
- JSONL: one record per item; for OpenAI batch inputs, OpenAI's batch output line
  (``id``, ``custom_id``, ``response{status_code, request_id, body}``, ``error``).
- CSV: see ``csv_output``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import IO, Any

from batchyard.core.models import BatchInfo, ItemInfo
from batchyard.core.store import Store
from batchyard.io.flatten import iter_numbers
from batchyard.io.readers import is_openai_request

FORMATS = ("json", "jsonl", "csv")
FINAL_ITEM_STATES = ("succeeded", "failed", "cancelled")
MAX_STAT_FIELDS = 1000


def summary(info: BatchInfo, items: Iterator[ItemInfo] | None = None,
            stats: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Totals from the batch's counters, and count/mean/min/max/sum of each numeric result field (nested
    fields by dotted name: ``scores.confidence``), from ``stats`` as a store computes them, or from ``items``."""
    processed = info.items_succeeded + info.items_failed
    out: dict[str, Any] = {
        "items_total": info.items_total,
        "succeeded": info.items_succeeded,
        "failed": info.items_failed,
        "cancelled": info.items_cancelled,
        "pending": info.items_pending + info.items_running,
        "success_rate": round(info.items_succeeded / processed, 4) if processed else None,
        "processing_time_s": round(info.active_seconds, 3),
        "throughput_per_s": info.throughput_per_s,
        "attempts": info.attempts_total,
        "cost": round(info.cost_total, 6),
        "cost_unit": info.cost_unit,
        "cost_estimated": None if info.cost_estimated is None else round(info.cost_estimated, 6),
        "cost_projected": None if info.cost_projected is None else round(info.cost_projected, 6),
        "budget": info.budget,
        "partial": not info.is_final,
        "started_at": info.started_at.isoformat() if info.started_at else None,
        "completed_at": info.completed_at.isoformat() if info.completed_at else None,
    }
    if stats is not None:
        out["fields"] = stats
    elif items is not None:
        acc: dict[str, list[float]] = {}
        for it in items:
            for k, v in iter_numbers(it.result):
                s = acc.get(k)
                if s is None:
                    if len(acc) < MAX_STAT_FIELDS:
                        acc[k] = [1, v, v, v]
                else:
                    s[0] += 1
                    s[1] += v
                    if v < s[2]:
                        s[2] = v
                    if v > s[3]:
                        s[3] = v
        out["fields"] = {k: {"count": int(s[0]), "mean": s[1] / s[0], "min": s[2], "max": s[3], "sum": s[1]}
                         for k, s in sorted(acc.items())}
    return out


def item_record(it: ItemInfo) -> dict[str, Any]:
    return {
        "item_id": it.item_id,
        "status": it.status.value,
        "input": it.payload,
        "result": it.result,
        "error": it.error.model_dump(mode="json", exclude={"traceback"}) if it.error else None,
        "attempts": it.attempts,
        "duration_s": it.duration_s,
        "cost": it.cost,
        "finished_at": it.finished_at.isoformat() if it.finished_at else None,
    }


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def openai_record(it: ItemInfo) -> dict[str, Any]:
    """An item as a line of an OpenAI batch output (or error) file."""
    payload = it.payload if isinstance(it.payload, dict) else {}
    custom_id = payload.get("custom_id", it.item_id)
    response = None
    error = None
    if it.status.value == "succeeded":
        result = it.result
        status_code, body = 200, result
        if isinstance(result, dict) and "body" in result and set(result) <= {"status_code", "body", "request_id"}:
            status_code, body = int(result.get("status_code") or 200), result["body"]
        response = {"status_code": status_code, "request_id": f"req_{_digest(it.batch_id, it.item_id)}",
                    "body": body}
    elif it.error is not None:
        error = {"code": it.error.type, "message": it.error.message}
    else:
        error = {"code": it.status.value, "message": f"the request was {it.status.value}"}
    return {"id": f"batch_req_{_digest(it.batch_id, it.item_id, 'line')}", "custom_id": custom_id,
            "response": response, "error": error}


def select_items(store: Store, info: BatchInfo, status: str | None = None,
                 errors_only: bool = False) -> Iterator[ItemInfo]:
    """The items an export shows: the failed ones for ``errors_only``; only finished ones while running."""
    wanted = "failed" if errors_only else status
    rows = store.iter_items(info.batch_id, status=wanted)
    if wanted is not None or info.is_final:
        return rows
    return (it for it in rows if it.status.value in FINAL_ITEM_STATES)


def write_results(store: Store, batch_id: str, out: IO[str], fmt: str = "json",
                  status: str | None = None, errors_only: bool = False) -> int:
    """Stream a batch's results to ``out``; returns the number of items written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    info = store.get_batch(batch_id)
    if fmt == "csv":
        from batchyard.io.csv_output import write_csv

        return write_csv(lambda: select_items(store, info, status, errors_only), out)
    rows = select_items(store, info, status, errors_only)
    n = 0
    dumps = json.dumps
    if fmt == "jsonl":
        for it in rows:
            record = openai_record(it) if is_openai_request(it.payload) else item_record(it)
            out.write(dumps(record, default=str, ensure_ascii=False) + "\n")
            n += 1
        return n
    head = {"batch_id": info.batch_id, "status": info.status.value, "partial": not info.is_final,
            "errors_only": errors_only,
            "summary": summary(info, stats=store.result_stats(batch_id, MAX_STAT_FIELDS))}
    text = json.dumps(head, indent=2, default=str, ensure_ascii=False)
    out.write(text[:-2] + ',\n  "results": [')
    for it in rows:
        out.write(("," if n else "") + "\n    " + dumps(item_record(it), default=str, ensure_ascii=False))
        n += 1
    out.write("\n  ]\n}\n")
    return n
