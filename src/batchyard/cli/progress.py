"""Progress display for `run`, `retry`, `watch` and `submit --wait`: a Rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from batchyard.core.models import BatchInfo

PLAIN_EVERY_S = 2.0


class ProgressView:
    def __init__(self, console: Console, info: BatchInfo) -> None:
        self.console = console
        self.tty = console.is_terminal
        self._last_plain = 0.0
        self._final_shown = False
        self._progress: Progress | None = None
        self._task: Any = None
        self._info = info

    def __enter__(self) -> ProgressView:
        if self.tty:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("[green]{task.fields[ok]} ok[/green] [red]{task.fields[failed]} failed[/red]"),
                TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, refresh_per_second=8)
            self._progress.__enter__()
            self._task = self._progress.add_task(self._info.batch_id, total=self._info.items_total,
                                                 ok=0, failed=0, rate="")
        return self

    def update(self, info: BatchInfo) -> None:
        done = info.items_succeeded + info.items_failed + info.items_cancelled
        rate = f"{info.throughput_per_s:,.0f}/s" if info.throughput_per_s else ""
        state = (f" [{info.throttled}]" if info.throttled else "") if info.status == "running" else \
            f" [{info.status}" + (f": {info.pause_reason}]" if info.pause_reason else "]")
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=info.items_total, ok=info.items_succeeded,
                                  failed=info.items_failed, rate=rate + state)
            return
        now = time.monotonic()
        if info.is_final and self._final_shown:
            return
        if now - self._last_plain >= PLAIN_EVERY_S or info.is_final:
            self._final_shown = info.is_final
            self._last_plain = now
            eta = ""
            if info.estimated_completion and not info.is_final:
                eta = f" eta {max(0.0, info.estimated_completion.timestamp() - time.time()):.0f}s"
            self.console.print(
                f"{info.batch_id} {info.status}{state and ''} {done}/{info.items_total} "
                f"({info.progress_percent:.1f}%) ok={info.items_succeeded} failed={info.items_failed}"
                f"{' ' + rate if rate else ''}{eta}" + (f" ({info.throttled})" if info.throttled else ""),
                highlight=False)

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(t, e, tb)
