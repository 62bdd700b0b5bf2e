"""Collecting input problems: every bad row is reported, with a bound on what is kept in memory."""

from __future__ import annotations

from batchyard.core.errors import InputError, InputProblem

MAX_PROBLEMS = 10_000


class Problems:
    """An append-only list of problems that keeps the first ``limit`` and counts the rest."""

    def __init__(self, source: str | None, limit: int = MAX_PROBLEMS) -> None:
        self.source = source
        self.limit = limit
        self.items: list[InputProblem] = []
        self.dropped = 0

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items) + self.dropped

    def add(self, line: int | None, reason: str, column: str | None = None) -> None:
        if len(self.items) < self.limit:
            self.items.append(InputProblem(line=line, reason=reason, column=column, source=self.source))
        else:
            self.dropped += 1

    def error(self) -> InputError:
        found = list(self.items)
        if self.dropped:
            found.append(InputProblem(line=None, source=self.source,
                                      reason=f"... and {self.dropped} more problems not listed"))
        return InputError(found)

    def raise_if_any(self) -> None:
        if self.items:
            raise self.error()
