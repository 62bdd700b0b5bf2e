"""Named SQL blocks and migrations, per dialect, kept out of the Python code."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.M)


@cache
def queries(dialect: str) -> dict[str, str]:
    """Parse ``<dialect>/queries.sql``: each block starts with a ``-- name: NAME`` line."""
    text = resources.files(__package__).joinpath(dialect, "queries.sql").read_text()
    parts = _NAME.split(text)
    return {parts[i]: parts[i + 1].strip().rstrip(";") for i in range(1, len(parts), 2)}


@cache
def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, sql) for every ``NNN_*.sql`` file of the dialect, in order."""
    folder = resources.files(__package__).joinpath(dialect)
    out = []
    for entry in folder.iterdir():
        m = re.match(r"^(\d{3})_.*\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), entry.read_text()))
    return sorted(out)
