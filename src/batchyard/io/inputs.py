"""Inputs: where a batch's items come from. Every reader streams and reports problems by line."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchyard.core.errors import InputError, InputProblem

FORMATS = ("text", "json")
_EXT = {".txt": "text", ".lst": "text", ".list": "text", ".json": "json"}
Row = tuple[str | None, Any]


@dataclass
class InputSource:
    """A readable input: its name, format and a local path to stream it from."""

    name: str
    format: str
    path: Path

    def fingerprint(self) -> str:
        """SHA-256 of the content: the same input is recognised on a rerun, wherever it lives."""
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def items(self) -> Iterator[Row]:
        reader = {"text": _read_text, "json": _read_json}[self.format]
        return reader(self)

    def count(self) -> int:
        return sum(1 for _ in self.items())


def open_input(location: str, fmt: str | None = None) -> InputSource:
    """Open a file path, or ``-`` for standard input (spooled to a temporary file so it can be hashed)."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if location == "-":
        spool = tempfile.NamedTemporaryFile(prefix="batchyard-stdin-", delete=False)
        with spool:
            shutil.copyfileobj(sys.stdin.buffer, spool)
        return InputSource(name="<stdin>", format=fmt or "text", path=Path(spool.name))
    path = Path(location)
    if not path.exists():
        raise InputError(f"{location}: no such file")
    if path.is_dir():
        raise InputError(f"{location}: is a directory (directory inputs come with the 'dir' format)")
    chosen = fmt or _EXT.get(path.suffix.lower()) or "text"
    return InputSource(name=location, format=chosen, path=path)


def _decode_lines(src: InputSource) -> Iterator[tuple[int, str]]:
    with open(src.path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError([InputProblem(lineno, f"not UTF-8 ({exc.reason} at byte {exc.start})",
                                               source=src.name)]) from None
            if lineno == 1:
                text = text.lstrip("\ufeff")
            yield lineno, text


def _read_text(src: InputSource) -> Iterator[Row]:
    for _, line in _decode_lines(src):
        value = line.strip()
        if value:
            yield None, value


def _read_json(src: InputSource) -> Iterator[Row]:
    try:
        with open(src.path, encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError([InputProblem(exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})",
                                       source=src.name)]) from None
    if not isinstance(data, list):
        raise InputError([InputProblem(1, f"expected a JSON array of items, got {type(data).__name__}",
                                       source=src.name)])
    for value in data:
        yield None, value
