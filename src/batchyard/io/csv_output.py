"""CSV results: one row per item, input fields and flattened result fields as columns.

Columns: ``item_id``, ``status``, the item's input fields under their own names (so that an errors-only
export can be fixed and submitted again as it is; a list of words is written ``a,b`` as CSV inputs give
it), ``result.<field>`` for every (nested) result field, then ``error_type``, ``error_message``,
``attempts``, ``duration_s`` and ``cost``. Scalar inputs (text lines) go in an ``input`` column.

Two streamed passes over the store: the first finds the columns, the second writes the rows. Every
text cell is guarded against spreadsheet formula injection.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from typing import IO, Any

from batchyard.core.models import ItemInfo
from batchyard.io.flatten import cell, flatten

HEAD = ("item_id", "status")
TAIL = ("error_type", "error_message", "attempts", "duration_s", "cost")
MAX_COLUMNS = 2000  # past this many distinct fields, a prefix's fields go in one JSON column instead


class _Columns:
    def __init__(self, prefix: str, reserved: set[str]) -> None:
        self.prefix = prefix
        self.reserved = reserved
        self.names: dict[str, str] = {}  # flat key -> column name
        self.whole = False  # too many fields: one JSON column

    def column(self, key: str) -> str:
        if self.prefix:
            return f"{self.prefix}.{key}" if key else self.prefix
        if not key:
            return "input"
        if key in self.reserved or key.startswith("result.") or key == "input":
            return f"input.{key}"
        return key

    def see(self, flat: dict[str, Any]) -> None:
        if self.whole:
            return
        for key in flat:
            if key not in self.names:
                if len(self.names) >= MAX_COLUMNS:
                    self.whole = True
                    return
                self.names[key] = self.column(key)

    def header(self) -> list[str]:
        if self.whole:
            return [self.prefix or "input"]
        return list(self.names.values())

    def cells(self, value: Any, flat: dict[str, Any], lists: str) -> dict[str, str]:
        if self.whole:
            return {self.prefix or "input": cell(value)}
        return {self.names[k]: cell(v, lists) for k, v in flat.items() if k in self.names}


def _flat_input(payload: Any) -> dict[str, Any]:
    return flatten(payload) if isinstance(payload, dict) else {"": payload}


def _flat_result(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    return flatten(result) if isinstance(result, dict) else {"": result}


def write_csv(items: Callable[[], Iterable[ItemInfo]], out: IO[str]) -> int:
    """``items`` is called twice: once to find the columns, once to write the rows."""
    reserved = set(HEAD) | set(TAIL)
    inputs = _Columns("", reserved)
    results = _Columns("result", reserved)
    for it in items():
        inputs.see(_flat_input(it.payload))
        results.see(_flat_result(it.result))
    header = [*HEAD, *inputs.header(), *results.header(), *TAIL]
    writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    n = 0
    for it in items():
        row = {"item_id": cell(it.item_id), "status": it.status.value}
        row.update(inputs.cells(it.payload, _flat_input(it.payload), "comma"))
        row.update(results.cells(it.result, _flat_result(it.result), "json"))
        row["error_type"] = cell(it.error.type) if it.error else ""
        row["error_message"] = cell(it.error.message) if it.error else ""
        row["attempts"] = str(it.attempts)
        row["duration_s"] = cell(it.duration_s)
        row["cost"] = cell(it.cost)
        writer.writerow(row)
        n += 1
    return n
