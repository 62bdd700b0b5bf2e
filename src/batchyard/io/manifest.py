"""Manifests (seed 000): what a batch produced, one entry per item, with the processor's reference.

```json
{"version": "1.0", "created_at": "...", "batch_id": "...", "processor": "...", "status": "completed",
 "partial": false, "ref_field": "swarm_ref",
 "totals": {"items_total": 5, "succeeded": 5, "failed": 0, "cancelled": 0, "pending": 0},
 "items": [{"item_id": "1", "name": "log_001.txt", "size": 1024, "status": "succeeded",
            "swarm_ref": "def456..."}],
 "total_size": 1024}
```

The reference is the result field named by ``ref_field`` (a dotted path for nested results), or by
default the first of ``ref``, ``reference``, ``swarm_ref``, ``id`` that a result has. Items stream from
the store; the manifest of a running batch lists what is done so far and says ``"partial": true``.
"""

from __future__ import annotations

import json
import posixpath
from datetime import UTC, datetime
from typing import IO, Any

from batchyard.core.models import ItemInfo
from batchyard.core.store import Store
from batchyard.io.outputs import select_items

VERSION = "1.0"
DEFAULT_REF_FIELDS = ("ref", "reference", "swarm_ref", "id")


def _get(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def find_ref(result: Any, ref_field: str | None = None) -> tuple[str | None, Any]:
    """(field name, value) of an item's reference."""
    if ref_field:
        return ref_field, _get(result, ref_field)
    if isinstance(result, dict):
        for name in DEFAULT_REF_FIELDS:
            if result.get(name) is not None:
                return name, result[name]
    return None, None


def entry(it: ItemInfo, ref_field: str | None = None) -> dict[str, Any]:
    payload, result = it.payload, it.result
    name: Any = None
    size: Any = None
    if isinstance(payload, dict):
        name = payload.get("name") or payload.get("filename") or payload.get("custom_id")
        if name is None and isinstance(payload.get("path"), str):
            name = posixpath.basename(payload["path"].rstrip("/"))
        size = payload.get("size")
    elif payload is not None:
        name = str(payload)
    if size is None and isinstance(result, dict) and isinstance(result.get("size"), int):
        size = result["size"]
    out: dict[str, Any] = {"item_id": it.item_id, "name": name, "size": size, "status": it.status.value}
    field, ref = find_ref(result, ref_field)
    out[field or "reference"] = ref
    if it.error is not None:
        out["error"] = f"{it.error.type}: {it.error.message}"
    return out


def write_manifest(store: Store, batch_id: str, out: IO[str], ref_field: str | None = None) -> int:
    """Stream a batch's manifest to ``out``; returns the number of entries."""
    info = store.get_batch(batch_id)
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    head = {
        "version": VERSION,
        "created_at": now,
        "batch_id": info.batch_id,
        "processor": info.processor,
        "status": info.status.value,
        "partial": not info.is_final,
        "ref_field": ref_field,
        "totals": {"items_total": info.items_total, "succeeded": info.items_succeeded,
                   "failed": info.items_failed, "cancelled": info.items_cancelled,
                   "pending": info.items_pending + info.items_running},
    }
    text = json.dumps(head, indent=2, ensure_ascii=False)
    out.write(text[:-2] + ',\n  "items": [')
    n = 0
    total_size = 0
    for it in select_items(store, info):
        e = entry(it, ref_field)
        if isinstance(e["size"], int):
            total_size += e["size"]
        out.write(("," if n else "") + "\n    " + json.dumps(e, default=str, ensure_ascii=False))
        n += 1
    out.write(f'\n  ],\n  "total_size": {total_size}\n}}\n')
    return n
