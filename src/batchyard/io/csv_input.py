"""CSV input: a header row, then one item per row, checked against the processor's parameter model.

- UTF-8 with or without a byte-order mark; quoted fields may hold commas, quotes and newlines.
- A row's line number is the physical line it *starts* on, so an editor jumps straight to it.
- Model fields become typed values: ``"mfcc,ai"`` -> ``["mfcc", "ai"]`` for a list field, ``"3"`` -> ``3``
  for an int, JSON for object fields; an empty cell of an optional field is left out, so the model's
  default applies. Columns the model does not know are kept in the payload as text.
- Every bad row is reported (line, column, what was expected), all together, after the last row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from batchyard.io.problems import Problems
from batchyard.io.readers import decoded_lines
from batchyard.io.validation import RowValidator

if TYPE_CHECKING:
    from batchyard.io.inputs import InputSource

Row = tuple[str | None, Any]


class _Lines:
    """Feeds csv.reader physical lines and remembers their numbers (bad UTF-8 lines are reported)."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines
        self.last = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        self.last, text = next(self._lines)
        return text


def read_csv(src: InputSource, validator: RowValidator, problems: Problems) -> Iterator[Row]:
    with src.open() as fh:
        yield from parse_csv(decoded_lines(fh, problems), validator, problems)


def parse_csv(lines: Iterator[tuple[int, str]], validator: RowValidator, problems: Problems,
              delimiter: str = ",") -> Iterator[Row]:
    feed = _Lines(lines)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    plan: list[Any] = []
    width = 0
    end = 0  # the last physical line of the previous record
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = feed.last
            problems.add(start, f"malformed CSV: {exc}")
            continue
        end = feed.last
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        if header is None:
            header = [c.strip() for c in cells]
            width = len(header)
            _check_header(header, start, problems)
            validator.check_header(header, problems, start)
            plan = validator.plan(header)
            continue
        if len(cells) != width:
            problems.add(start, f"row has {len(cells)} fields, the header has {width}"
                         + (" (a field with a comma must be quoted)" if len(cells) > width else ""))
            continue
        payload, bad = validator.coerce_row(plan, header, cells)
        for col, reason in bad:
            problems.add(start, reason, col or None)
        if not problems.items:
            yield None, payload
    if header is None:
        problems.add(None, "no header row: the file is empty")
    problems.raise_if_any()


def _check_header(header: list[str], line: int, problems: Problems) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(header, 1):
        if not name:
            problems.add(line, f"column {i} of the header has no name")
        elif name in seen:
            problems.add(line, f"duplicate column name (also column {seen[name]})", name)
        else:
            seen[name] = i
