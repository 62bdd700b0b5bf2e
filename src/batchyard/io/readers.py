"""Readers for text lines, JSONL, JSON arrays and directories. All stream; all report every problem.

A reader yields ``(key_or_None, payload)``. Once it has found a problem it stops yielding items (they
would be rolled back anyway) but reads on to the end, so that the one ``InputError`` it raises after
the last line lists every problem in the input.

OpenAI batch files (objects with ``custom_id``, ``method``, ``url`` and ``body``) are recognised from
their first object: ``custom_id`` becomes the item's key and must be unique. Outside that format an
object's ``custom_id`` is still used as its key, under the same rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from batchyard.io.files import list_files
from batchyard.io.keyindex import KeyIndex
from batchyard.io.nesting import json_too_deep, too_deep_message, value_too_deep
from batchyard.io.problems import Problems
from batchyard.io.validation import RowValidator

if TYPE_CHECKING:
    from batchyard.io.inputs import InputSource

Row = tuple[str | None, Any]
OPENAI_FIELDS = ("custom_id", "method", "url", "body")
BOM = b"\xef\xbb\xbf"


def decoded_lines(fh: IO[bytes], problems: Problems) -> Iterator[tuple[int, str]]:
    """(line number, text) for each physical line; bad UTF-8 is reported and replaced, not fatal."""
    for lineno, raw in enumerate(fh, 1):
        if lineno == 1 and raw.startswith(BOM):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add(lineno, f"not UTF-8 ({exc.reason} at byte {exc.start} of the line)")
            text = raw.decode("utf-8", "replace")
        yield lineno, text


def is_openai_request(obj: Any) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in OPENAI_FIELDS)


class ObjectChecker:
    """Keys, OpenAI format and params-model checks for JSON values, located by line or by item index."""

    def __init__(self, validator: RowValidator, problems: Problems, label: str = "line") -> None:
        self.validator = validator
        self.problems = problems
        self.label = label
        self.keys = KeyIndex()
        self.openai: bool | None = None

    def add(self, where: int, reason: str, column: str | None = None) -> None:
        if self.label == "line":
            self.problems.add(where, reason, column)
        else:
            self.problems.add(None, f"{self.label} {where}: {reason}", column)

    def check(self, where: int, value: Any) -> str | None:
        """Report what is wrong with ``value``; return its key (or None)."""
        if self.openai is None:
            self.openai = is_openai_request(value)
        if self.openai:
            return self._check_openai(where, value)
        if isinstance(value, dict):
            key = self._key(where, value["custom_id"]) if "custom_id" in value else None
            for col, reason in self.validator.check_object(value):
                self.add(where, reason, col or None)
            return key
        self.validator.check_scalar(self.problems, where if self.label == "line" else None)
        return None

    def _check_openai(self, where: int, value: Any) -> str | None:
        if not isinstance(value, dict):
            self.add(where, f"expected an OpenAI batch request object, got {type(value).__name__}")
            return None
        url = value.get("url")
        if value.get("method") == "POST" and type(url) is str and url[:1] == "/" \
                and type(value.get("body")) is dict and "custom_id" in value:
            return self._key(where, value["custom_id"])  # the usual case, checked quickly
        missing = [k for k in OPENAI_FIELDS if k not in value]
        if missing:
            self.add(where, f"OpenAI batch request without {', '.join(missing)}")
        if "method" in value and value["method"] != "POST":
            self.add(where, f"method must be \"POST\", got {value['method']!r}", "method")
        if "url" in value and not (isinstance(url, str) and url.startswith("/")):
            self.add(where, f"url must be an endpoint path such as /v1/chat/completions, got {url!r}", "url")
        if "body" in value and not isinstance(value["body"], dict):
            self.add(where, f"body must be an object, got {type(value['body']).__name__}", "body")
        return self._key(where, value["custom_id"]) if "custom_id" in value else None

    def _key(self, where: int, key: Any) -> str | None:
        if not isinstance(key, str) or not key:
            self.add(where, f"custom_id must be a non-empty string, got {key!r}", "custom_id")
            return None
        first = self.keys.add(key, where)
        if first is not None:
            self.add(where, f"duplicate custom_id {key!r}: {self.label} {first} has it too", "custom_id")
        return key


def read_text(src: InputSource, validator: RowValidator, problems: Problems) -> Iterator[Row]:
    """One item per line; blank lines and ``#`` comments skipped; surrounding whitespace stripped."""
    with src.open() as fh:
        for lineno, line in decoded_lines(fh, problems):
            value = line.strip()
            if not value or value.startswith("#"):
                continue
            validator.check_scalar(problems, lineno)
            if not problems.items:
                yield None, value
    problems.raise_if_any()


def read_jsonl(src: InputSource, validator: RowValidator, problems: Problems) -> Iterator[Row]:
    checker = ObjectChecker(validator, problems)
    loads = json.loads
    with src.open() as fh:
        for lineno, line in decoded_lines(fh, problems):
            if not line.strip():
                continue
            if json_too_deep(line):  # before parsing: the parser would raise RecursionError
                problems.add(lineno, too_deep_message("the line"))
                continue
            try:
                value = loads(line)
            except ValueError as exc:
                msg = getattr(exc, "msg", str(exc))
                col = getattr(exc, "colno", None)
                problems.add(lineno, f"invalid JSON: {msg}" + (f" (column {col})" if col else ""))
                continue
            key = checker.check(lineno, value)
            if not problems.items:
                yield key, value
    problems.raise_if_any()


class _Replay:
    """A binary reader that gives back a peeked prefix before the rest of the stream."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def read(self, n: int | None = -1) -> bytes:
        if not self.head:
            return self.rest.read(n)
        if n is None or n < 0:
            out, self.head = self.head + self.rest.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        return out


def read_json(src: InputSource, validator: RowValidator, problems: Problems) -> Iterator[Row]:
    """A JSON array of scalars or objects, streamed with ijson (never parsed whole)."""
    import ijson

    checker = ObjectChecker(validator, problems, label="item")
    with src.open() as fh:
        head = fh.read(65536)
        if head.startswith(BOM):
            head = head[3:]
        first = head.lstrip()[:1]
        if first != b"[":
            kind = {b"{": "an object", b"": "nothing"}.get(first, "a scalar")
            problems.add(1, f"expected a JSON array of items, got {kind}")
            problems.raise_if_any()
        n = 0
        try:
            for n, value in enumerate(ijson.items(_Replay(head, fh), "item", use_float=True), 1):
                if value_too_deep(value):  # ijson builds any depth; storing it could not encode it again
                    problems.add(n, too_deep_message("the item"))
                    continue
                key = checker.check(n, value)
                if not problems.items:
                    yield key, value
        except ijson.JSONError as exc:
            problems.add(None, f"invalid JSON after item {n}: {exc}")
    problems.raise_if_any()


def read_dir(src: InputSource, validator: RowValidator, problems: Problems) -> Iterator[Row]:
    checked = False
    try:
        for payload in list_files(src.fs, src.path, src.recursive):
            if not checked:  # every payload has the same fields: one check says it all
                checked = True
                for col, reason in validator.check_object(payload):
                    problems.add(None, reason, col or None)
                problems.raise_if_any()
            yield None, payload
    except OSError as exc:
        problems.add(None, f"cannot list files: {exc}")
    if not checked and not problems:
        hint = "" if src.recursive else " (add --recursive to include subdirectories)"
        problems.add(None, "no files found" + hint)
    problems.raise_if_any()


def check_values(values: Iterator[tuple[int, Any]], validator: RowValidator, problems: Problems,
                 label: str = "item") -> Iterator[Row]:
    """Values built in code, checked as JSON array items are."""
    checker = ObjectChecker(validator, problems, label=label)
    for n, value in values:
        key = checker.check(n, value)
        if not problems.items:
            yield key, value
    problems.raise_if_any()
