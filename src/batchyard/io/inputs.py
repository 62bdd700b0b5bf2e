"""Inputs: where a batch's items come from. Every reader streams and reports problems by line.

``open_input(location)`` accepts a local path, ``-`` (standard input), a directory or a glob, or any
fsspec URI (``file://``, ``memory://``, ``http(s)://``; ``gs://`` and ``s3://`` with the ``cloud`` extra),
optionally compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``, by extension). The format comes from the
extension unless given. ``InputSource.items()`` yields ``(key_or_None, payload)`` pairs; when the input
has problems it raises one ``InputError`` listing all of them *after* the last item, so a store
consuming the items inside a transaction rolls the whole batch back.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.utils import infer_compression

from batchyard.core.errors import InputError
from batchyard.io import readers
from batchyard.io.csv_input import read_csv
from batchyard.io.files import list_files
from batchyard.io.problems import Problems
from batchyard.io.validation import RowValidator

CLOUD_EXTRA = "pip install 'batchyard[cloud]'"
_EXTRA_FOR = {"gs": CLOUD_EXTRA, "gcs": CLOUD_EXTRA, "s3": CLOUD_EXTRA, "s3a": CLOUD_EXTRA,
              "http": "pip install aiohttp", "https": "pip install aiohttp"}


class InputFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    JSON = "json"
    TEXT = "text"
    DIR = "dir"


FORMATS = tuple(f.value for f in InputFormat)
_EXT = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".txt": "text", ".lst": "text",
        ".list": "text"}
_MAGIC = set("*?[")
Row = tuple[str | None, Any]


@dataclass
class InputSource:
    """A readable input: its name, its format, and how to stream it."""

    name: str
    format: str
    fs: Any  # an fsspec filesystem
    path: str  # path on ``fs`` (a file, a directory or a glob pattern)
    compression: str | None = None
    recursive: bool = False
    processor: Any = None  # a core Processor: rows are validated against its params model
    params: dict[str, Any] = field(default_factory=dict)  # the batch's shared params
    spool: Path | None = None  # standard input, copied to a file so that it can be read twice

    @property
    def protocol(self) -> str:
        p = self.fs.protocol
        return p[0] if isinstance(p, tuple | list) else p

    def open(self, raw: bool = False) -> IO[bytes]:
        """The input's bytes, decompressed unless ``raw``, streamed (never loaded whole)."""
        kwargs: dict[str, Any] = {}
        if self.protocol in ("http", "https"):
            kwargs["block_size"] = 0  # a plain streaming GET: no range requests, no length needed
        fh = self.fs.open(self.path, "rb", **kwargs)
        if not _is_local(self.fs):
            fh = io.BufferedReader(_Sequential(fh), buffer_size=1 << 20)  # fast readline, no seeks
        if self.compression and not raw:
            from fsspec.compression import compr

            return compr[self.compression](fh, mode="rb")
        return fh

    def fingerprint(self) -> str:
        """SHA-256 of the content (of the file listing, for directories): a rerun is recognised."""
        h = hashlib.sha256()
        try:
            if self.format == InputFormat.DIR:
                for payload in list_files(self.fs, self.path, self.recursive):
                    h.update(json.dumps(payload, sort_keys=True).encode() + b"\n")
            else:
                with self.open(raw=True) as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read: {exc}") from exc
        return h.hexdigest()

    def validator(self) -> RowValidator:
        proc = self.processor
        return RowValidator(getattr(proc, "params_model", None), self.params, getattr(proc, "name", None))

    def items(self) -> Iterator[Row]:
        """Every item; raises InputError listing every problem after the last one (nothing is lost early)."""
        problems = Problems(self.name)
        validator = self.validator()
        if self.format == InputFormat.DIR:
            return readers.read_dir(self, validator, problems)
        reader = {"csv": read_csv, "jsonl": readers.read_jsonl, "json": readers.read_json,
                  "text": readers.read_text}[self.format]
        return _guard(self.name, reader(self, validator, problems))

    def count(self) -> int:
        return sum(1 for _ in self.items())

    def close(self) -> None:
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)
            self.spool = None


class _Sequential(io.RawIOBase):
    """A remote file read front to back, for io.BufferedReader (streaming HTTP files cannot seek)."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._fh.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def _guard(name: str, rows: Iterator[Row]) -> Iterator[Row]:
    try:
        yield from rows
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc}") from exc


def detect_format(path: str) -> str | None:
    """The format an extension implies (``items.csv.gz`` is CSV), or None."""
    name = path.rsplit("/", 1)[-1].lower()
    comp = infer_compression(name)
    if comp:
        name = name.rsplit(".", 1)[0]
    return _EXT.get(os.path.splitext(name)[1])


def has_magic(path: str) -> bool:
    return any(c in _MAGIC for c in path)


def _filesystem(location: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    protocol = location.split("://", 1)[0].lower() if "://" in location else "file"
    try:
        return fsspec.core.url_to_fs(location, **(storage_options or {}))
    except ImportError as exc:
        hint = _EXTRA_FOR.get(protocol, f"install the fsspec implementation for {protocol}://")
        raise InputError(f"{location}: reading {protocol}:// needs an optional dependency; {hint} "
                         f"({exc})") from None
    except ValueError as exc:
        raise InputError(f"{location}: {exc}") from None


def open_input(location: str, fmt: str | None = None, *, processor: Any = None,
               params: dict[str, Any] | None = None, recursive: bool = False,
               storage_options: dict[str, Any] | None = None) -> InputSource:
    """Open a path, ``-`` (stdin), a directory, a glob or an fsspec URI.

    ``processor`` (a core Processor) makes the rows be validated against its params model, merged over
    ``params`` (the batch's shared parameters).
    """
    if fmt is not None:
        fmt = str(fmt.value if isinstance(fmt, InputFormat) else fmt).lower()
        if fmt not in FORMATS:
            raise InputError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
    common: dict[str, Any] = {"processor": processor, "params": dict(params or {}), "recursive": recursive}
    if location == "-":
        if fmt == InputFormat.DIR:
            raise InputError("standard input cannot be read as a directory")
        spool = tempfile.NamedTemporaryFile(prefix="batchyard-stdin-", delete=False)  # noqa: SIM115
        with spool:
            shutil.copyfileobj(sys.stdin.buffer, spool)
        atexit.register(Path(spool.name).unlink, missing_ok=True)
        fs, path = fsspec.core.url_to_fs(spool.name)
        return InputSource(name="<stdin>", format=fmt or "text", fs=fs, path=path, spool=Path(spool.name),
                           **common)
    fs, path = _filesystem(location, storage_options)
    local = _is_local(fs)
    try:
        if has_magic(path) and not (local and os.path.exists(path)):
            if fmt not in (None, InputFormat.DIR):
                raise InputError(f"{location}: a glob matches files, each an item; it cannot be read as {fmt}")
            return InputSource(name=location, format="dir", fs=fs, path=path, **common)
        if fs.isdir(path):
            if fmt not in (None, InputFormat.DIR):
                raise InputError(f"{location}: is a directory; it cannot be read as {fmt}")
            return InputSource(name=location, format="dir", fs=fs, path=path, **common)
        if not fs.exists(path):
            raise InputError(f"{location}: no such file")
    except (OSError, PermissionError) as exc:
        raise InputError(f"{location}: cannot open: {exc}") from exc
    if fmt == InputFormat.DIR:
        raise InputError(f"{location}: is a file, not a directory")
    chosen = fmt or detect_format(path) or "text"
    return InputSource(name=location, format=chosen, fs=fs, path=path, compression=infer_compression(path),
                       **common)


def from_iterable(values: Iterable[Any], *, processor: Any = None, params: dict[str, Any] | None = None,
                  name: str = "<items>") -> Iterator[Row]:
    """Items built in code, checked like a file's: objects against the processor's params model.

    Values may be payloads or ``(key, payload)`` tuples; every problem is reported after the last one.
    """
    problems = Problems(name)
    validator = RowValidator(getattr(processor, "params_model", None), params, getattr(processor, "name", None))
    return readers.check_values(((i, v) for i, v in enumerate(values, 1)), validator, problems, label="item")
