"""Outputs: results as JSON, CSV or JSONL, streamed from the store with a summary."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from typing import IO, Any

from batchyard.core.models import BatchInfo, ItemInfo
from batchyard.core.store import Store

FORMATS = ("json", "jsonl", "csv")


def summary(info: BatchInfo, items: Iterator[ItemInfo] | None = None) -> dict[str, Any]:
    """Totals from the batch's counters; mean/min/max of each numeric result field if items are given."""
    processed = info.items_succeeded + info.items_failed
    out: dict[str, Any] = {
        "items_total": info.items_total,
        "succeeded": info.items_succeeded,
        "failed": info.items_failed,
        "cancelled": info.items_cancelled,
        "pending": info.items_pending + info.items_running,
        "success_rate": round(info.items_succeeded / processed, 4) if processed else None,
        "processing_time_s": round(info.active_seconds, 3),
        "attempts": info.attempts_total,
        "cost": round(info.cost_total, 6),
        "cost_unit": info.cost_unit,
        "partial": not info.is_final,
    }
    if items is not None:
        stats: dict[str, list[float]] = {}
        for it in items:
            if isinstance(it.result, dict):
                for k, v in it.result.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                        s = stats.get(k)
                        if s is None:
                            stats[k] = [1, v, v, v]
                        else:
                            s[0] += 1
                            s[1] += v
                            s[2] = min(s[2], v)
                            s[3] = max(s[3], v)
        out["fields"] = {k: {"count": int(s[0]), "mean": s[1] / s[0], "min": s[2], "max": s[3]}
                         for k, s in sorted(stats.items())}
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
    }


def write_results(store: Store, batch_id: str, out: IO[str], fmt: str = "json",
                  status: str | None = None) -> int:
    """Stream a batch's results to ``out``; returns the number of items written."""
    info = store.get_batch(batch_id)
    rows = store.iter_items(batch_id, status=status)
    n = 0
    if fmt == "json":
        head = {"batch_id": info.batch_id, "status": info.status.value,
                "summary": summary(info, store.iter_items(batch_id, status="succeeded"))}
        text = json.dumps(head, indent=2, default=str)
        out.write(text[:-2] + ',\n  "results": [')
        for it in rows:
            out.write(("," if n else "") + "\n    " + json.dumps(item_record(it), default=str))
            n += 1
        out.write("\n  ]\n}\n")
    elif fmt == "jsonl":
        for it in rows:
            out.write(json.dumps(item_record(it), default=str) + "\n")
            n += 1
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["item_id", "status", "input", "result", "error_type", "error_message", "attempts",
                         "duration_s", "cost"])
        for it in rows:
            writer.writerow([it.item_id, it.status.value, json.dumps(it.payload),
                             json.dumps(it.result) if it.result is not None else "",
                             it.error.type if it.error else "", it.error.message if it.error else "",
                             it.attempts, it.duration_s if it.duration_s is not None else "",
                             it.cost if it.cost is not None else ""])
            n += 1
    else:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return n
