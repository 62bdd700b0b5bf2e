"""Options from ``BATCHYARD_*`` environment variables: what Click does not split the way we document.

Every option of the local commands can come from the environment (``--parallel`` from ``BATCHYARD_PARALLEL``,
the input from ``BATCHYARD_INPUT``...), so a container runs a batch with no arguments at all. Click reads a
repeatable option's variable as whitespace-separated values; lists of files and modules are documented
"separated like PATH" (``a.py:b.py``), as ``BATCHYARD_DATA_ROOTS`` is, so those are split again here.
"""

from __future__ import annotations

import os


def split_paths(values: list[str] | None) -> list[str] | None:
    """Typer callback: each value split on ``os.pathsep`` (``:``, ``;`` on Windows), empty parts dropped."""
    if values is None:
        return None
    return [part for value in values for part in value.split(os.pathsep) if part]
