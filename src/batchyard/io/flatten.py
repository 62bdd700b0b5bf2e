"""Nested values to flat columns and back, and cells that are safe to open in a spreadsheet."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

# A cell starting with one of these is read as a formula by Excel, LibreOffice or Google Sheets.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}``.

    Nested objects become dotted keys; lists and empty objects stay whole (a cell shows them as JSON).
    A value that is not an object becomes ``{prefix: value}``.
    """
    out: dict[str, Any] = {}
    _flatten_into(out, value, prefix)
    return out


def _flatten_into(out: dict[str, Any], value: Any, prefix: str) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten_into(out, v, f"{prefix}.{k}" if prefix else str(k))
    elif prefix or not isinstance(value, dict):
        out[prefix] = value


def unflatten(flat: dict[str, Any]) -> Any:
    """The inverse of ``flatten`` for keys without dots."""
    if set(flat) == {""}:
        return flat[""]
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return root


def iter_numbers(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every finite number in a (nested) result, with its dotted field name; bools are not numbers."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from iter_numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, int | float) and not isinstance(value, bool) and prefix and math.isfinite(value):
        yield prefix, value


def neutralise(text: str) -> str:
    """Guard against spreadsheet formula injection: ``=1+1`` -> ``'=1+1``; plain numbers stay as they are."""
    if text.startswith(FORMULA_PREFIXES) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def _joinable(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(x, str) and x and "," not in x and x == x.strip()
                               and not x.startswith("[") for x in items)


def cell(value: Any, lists: str = "json") -> str:
    """A CSV cell for a flat value. ``lists="comma"`` writes a list of plain words as ``a,b`` (how CSV inputs
    give list fields), so that the cell can be read back as the same list."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return neutralise(value)
    if lists == "comma" and isinstance(value, list) and _joinable(value):
        return neutralise(",".join(value))
    return neutralise(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))
