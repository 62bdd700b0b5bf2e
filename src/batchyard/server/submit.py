"""Submissions: items inline, from an upload or from a URI, checked and created whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from batchyard.core.engine import Engine
from batchyard.core.errors import InputError
from batchyard.core.models import BatchInfo, BatchSpec
from batchyard.core.processor import Processor
from batchyard.io import inputs
from batchyard.server.errors import InputUriNotAllowed, ProcessorNotAllowed, problems
from batchyard.server.schemas import Problem, SubmitOptions, ValidationReport
from batchyard.server.settings import Settings

Rows = Iterator[tuple[str | None, Any]]
_SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "json": ".json", "text": ".txt"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def allowed_processor(engine: Engine, settings: Settings, name: str) -> Processor:
    """The processor named ``name``, if this server may run it."""
    proc = engine.processor(name)
    if proc.unsafe and not settings.allow_unsafe_processors:
        raise ProcessorNotAllowed(f"processor {name!r} runs arbitrary commands; this server does not serve it "
                                  "(start it with --allow-unsafe-processors to allow it)")
    return proc


def spec_for(opts: SubmitOptions, proc: Processor, settings: Settings, source: str | None) -> BatchSpec:
    fields: dict[str, Any] = {
        "processor": proc.name, "params": opts.params, "parallel": opts.parallel_jobs, "priority": opts.priority,
        "failure_policy": opts.failure_policy, "description": opts.description, "tags": opts.tags,
        "tenant": settings.tenant, "source": source,
    }
    if opts.max_attempts is not None:
        fields["max_attempts"] = opts.max_attempts
    return BatchSpec(**fields)


def inline_rows(items: list[Any], proc: Processor, params: dict[str, Any]) -> Rows:
    return inputs.from_iterable(items, processor=proc, params=params, name="items")


def uri_rows(settings: Settings, uri: str, fmt: str | None, proc: Processor, params: dict[str, Any]) -> Rows:
    if not settings.allow_input_uri:
        raise InputUriNotAllowed("this server does not read input_uri (start it with --allow-input-uri); "
                                 "send the items inline or upload the file to POST /batches/upload")
    return inputs.open_input(uri, fmt, processor=proc, params=params).items()


@contextmanager
def spooled_upload(fh: IO[bytes], filename: str | None, fmt: str | None) -> Iterator[tuple[Path, str | None]]:
    """Copy an uploaded file to a temporary file (the readers stream from a path); remove it afterwards.

    The temporary name's suffix comes from a fixed list (format, then compression), never from the
    client's file name.
    """
    name = (filename or "upload").lower()
    chosen = fmt or inputs.detect_format(name)
    compression = next((ext for ext in _COMPRESSED if name.endswith(ext)), "")
    suffix = _SUFFIX.get(chosen or "text", ".txt") + compression
    tmp = tempfile.NamedTemporaryFile(prefix="batchyard-upload-", suffix=suffix, delete=False)  # noqa: SIM115
    try:
        with tmp:
            shutil.copyfileobj(fh, tmp, 1 << 20)
        yield Path(tmp.name), chosen or "text"
    finally:
        os.unlink(tmp.name)


def upload_rows(path: Path, filename: str | None, fmt: str | None, proc: Processor, params: dict[str, Any]) -> Rows:
    source = inputs.open_input(str(path), fmt, processor=proc, params=params)
    source.name = filename or "upload"  # problems name the file the user sent, not our temporary copy
    return source.items()


def report(engine: Engine, proc: Processor, params: dict[str, Any], rows: Rows) -> ValidationReport:
    """Read every row without creating anything: the item count and every problem found."""
    count, found = 0, []
    try:
        engine.check_params(proc, params)
        for _ in rows:
            count += 1
    except InputError as exc:
        found = [Problem.model_validate(p) for p in problems(exc)]
    cost = count * proc.cost_per_item if proc.cost_per_item else None
    return ValidationReport(valid=not found, processor=proc.name, items=count, problems=found,
                            estimated_cost=cost, cost_unit=proc.cost_unit if cost is not None else None)


def create(engine: Engine, opts: SubmitOptions, proc: Processor, settings: Settings, rows: Rows,
           source: str | None) -> BatchInfo:
    return engine.submit(spec_for(opts, proc, settings, source), rows, start=opts.start)
