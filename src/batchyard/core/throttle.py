"""Resource-aware workers: stop claiming while memory, disk space or CPU is past its threshold; go on once under.

A worker asks ``Throttle.reason()`` every pump cycle; psutil is read at most once a second, so the check costs
nothing on the hot path. While a reason holds, the worker starts no new items (those in flight finish; those
claimed but not started go back to the store for other workers), and the batches it serves say why
(``BatchInfo.throttled``: ``throttled: memory 91% > 90%``).

Thresholds come from options (``batchyard worker --max-memory-percent 90``), from ``BATCHYARD_*`` variables (see
``ENV``; ``batchyard serve`` reads them for its embedded worker), and from a JSON file re-read whenever it changes
(``--thresholds-file``), so that an operator can tighten or relax a running worker without restarting it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("batchyard.throttle")
CHECK_SECONDS = 1.0  # psutil is read at most this often

ENV = {
    "max_memory_percent": "BATCHYARD_MAX_MEMORY_PERCENT",
    "min_disk_free_gb": "BATCHYARD_MIN_DISK_FREE_GB",
    "disk_path": "BATCHYARD_DISK_PATH",
    "max_cpu_percent": "BATCHYARD_MAX_CPU_PERCENT",
}
FILE_ENV = "BATCHYARD_THRESHOLDS_FILE"


@dataclass(frozen=True)
class Thresholds:
    """Above these, a worker starts no new items. None: not watched."""

    max_memory_percent: float | None = None  # of the machine's memory in use
    min_disk_free_gb: float | None = None  # free space on ``disk_path`` (where outputs go)
    disk_path: str = "."
    max_cpu_percent: float | None = None  # of all CPUs, over the last second

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_memory_percent, self.min_disk_free_gb, self.max_cpu_percent))

    def merged(self, values: dict[str, Any]) -> Thresholds:
        """These thresholds with ``values`` (names of the fields) over them; unknown names are an error."""
        unknown = set(values) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown thresholds {sorted(unknown)}; expected {sorted(ENV)}")
        return dataclasses.replace(self, **{k: (str(v) if k == "disk_path" else None if v is None else float(v))
                                            for k, v in values.items()})


def reason(t: Thresholds) -> str | None:
    """Why this machine is past a threshold now, or None."""
    found = []
    if t.max_memory_percent is not None:
        used = psutil.virtual_memory().percent
        if used > t.max_memory_percent:
            found.append(f"memory {used:.0f}% > {t.max_memory_percent:g}%")
    if t.min_disk_free_gb is not None:
        free = psutil.disk_usage(t.disk_path).free / 1e9
        if free < t.min_disk_free_gb:
            found.append(f"disk free {free:.1f} GB < {t.min_disk_free_gb:g} GB on {t.disk_path}")
    if t.max_cpu_percent is not None:
        cpu = psutil.cpu_percent(interval=None)  # since the previous call: the last second, as checks go
        if cpu > t.max_cpu_percent:
            found.append(f"cpu {cpu:.0f}% > {t.max_cpu_percent:g}%")
    return "throttled: " + ", ".join(found) if found else None


class Throttle:
    """The thresholds a worker watches (options, then the file's values over them) and the reason they give."""

    def __init__(self, thresholds: Thresholds | None = None, file: str | os.PathLike[str] | None = None) -> None:
        self.base = thresholds or Thresholds()
        self.thresholds = self.base
        self.file = Path(file) if file else None
        self._mtime: float | None = None
        self._next = 0.0
        self._last: str | None = None
        psutil.cpu_percent(interval=None)  # the first reading is meaningless: take it now

    @classmethod
    def from_env(cls, thresholds: Thresholds | None = None, file: str | None = None) -> Throttle | None:
        """``thresholds`` with the ``BATCHYARD_*`` variables that are set over them; None if nothing is watched."""
        values = {k: os.environ[v] for k, v in ENV.items() if os.environ.get(v)}
        merged = (thresholds or Thresholds()).merged(values)
        file = file or os.environ.get(FILE_ENV) or None
        return cls(merged, file) if merged.active or file else None

    def _reload(self) -> None:
        if self.file is None:
            return
        try:
            mtime = self.file.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            values = json.loads(self.file.read_text()) if mtime is not None else {}
            self.thresholds = self.base.merged(values)
        except (ValueError, TypeError, OSError) as exc:  # keep the thresholds in force; say why once
            log.warning("thresholds file %s ignored: %s", self.file, exc)

    def reason(self) -> str | None:
        """Why not to claim now, or None; psutil and the file are read at most once a second."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + CHECK_SECONDS
            self._reload()
            self._last = reason(self.thresholds) if self.thresholds.active else None
        return self._last
