"""Submissions: items inline, from an upload or from a URI, checked and created whole or not at all.

What a client may make the server read is guarded here (see ``netguard``): ``input_uri`` by scheme (http(s)
through the SSRF guard, local paths inside the data roots, cloud object stores), and the path fields of
the processor's params model in every row and in the shared params. The embedded CLI reads through
``io.inputs`` directly and stays unconfined: there the user is the machine's own user.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from batchyard.core.engine import Engine
from batchyard.core.errors import InputError, InputProblem
from batchyard.core.models import BatchInfo, BatchSpec, Idempotency, Webhook
from batchyard.core.processor import Processor
from batchyard.core.sample import model_totals
from batchyard.io import inputs
from batchyard.server import netguard
from batchyard.server.errors import InputUriNotAllowed, PathNotAllowed, ProcessorNotAllowed, TenantLimit, problems
from batchyard.server.schemas import Problem, SubmitOptions, ValidationReport
from batchyard.server.settings import Settings

Rows = Iterator[tuple[str | None, Any]]
_SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "json": ".json", "text": ".txt"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
# Object stores: read with the server's own cloud credentials (documented with --data-root in the README).
CLOUD_SCHEMES = ("gs", "gcs", "s3", "s3a", "az", "abfs", "abfss", "adl")
ACCEPTED_URIS = ("http:// and https:// URLs (public addresses unless --allow-private-network), local paths and "
                 f"file:// URLs under a --data-root, and {', '.join(s + '://' for s in CLOUD_SCHEMES)}")


def allowed_processor(engine: Engine, settings: Settings, name: str) -> Processor:
    """The processor named ``name``, if this server may run it."""
    proc = engine.processor(name)
    if proc.unsafe and not settings.allow_unsafe_processors:
        raise ProcessorNotAllowed(f"processor {name!r} runs arbitrary commands; this server does not serve it "
                                  "(start it with --allow-unsafe-processors to allow it)")
    return proc


def spec_for(opts: SubmitOptions, proc: Processor, settings: Settings, source: str | None,
             tenant: str) -> BatchSpec:
    webhook = opts.webhook or (Webhook(url=settings.webhook_url) if settings.webhook_url else None)
    if webhook is not None:  # refused now rather than at the first delivery, long after the submitter left
        netguard.check_url(webhook.url, allow_private=settings.allow_private_network)
    fields: dict[str, Any] = {
        "processor": proc.name, "params": opts.params, "parallel": opts.parallel_jobs, "priority": opts.priority,
        "failure_policy": opts.failure_policy, "description": opts.description, "tags": opts.tags,
        "tenant": tenant, "source": source, "webhook": webhook, "budget": opts.budget,
    }
    if opts.max_attempts is not None:
        fields["max_attempts"] = opts.max_attempts
    return BatchSpec(**fields)


def inline_rows(settings: Settings, items: list[Any], proc: Processor, params: dict[str, Any]) -> Rows:
    confine_params(settings, proc, params)
    checking = confining(settings, proc)
    rows = inputs.from_iterable(items, processor=checking, params=params, name="items")
    return rows if checking is proc else refusals_as_403(rows)


def uri_rows(settings: Settings, uri: str, fmt: str | None, proc: Processor, params: dict[str, Any]) -> Rows:
    """The rows of the file or URL ``uri`` names, if this server may read it (see ``ACCEPTED_URIS``)."""
    scheme = uri_scheme(uri)
    if scheme in ("http", "https"):  # first: a refused address is the answer that matters most
        netguard.check_url(uri, allow_private=settings.allow_private_network)
    if "::" in uri:  # fsspec chains ("zip://a.csv::s3://b/c.zip", "simplecache::http://..."): one layer only
        raise InputUriNotAllowed(f"input_uri {uri!r}: '::' chains fsspec filesystems, which this server does not "
                                 "read (fsspec reads the '::' of an IPv6 address in a URL so too: use a host name); "
                                 f"it reads {ACCEPTED_URIS}")
    confine_params(settings, proc, params)
    checking = confining(settings, proc)
    if scheme in ("http", "https"):
        source = inputs.open_input(uri, fmt, processor=checking, params=params,
                                   storage_options=netguard.http_storage_options(settings.allow_private_network))
        rows = source.items()
    elif scheme in CLOUD_SCHEMES:
        rows = inputs.open_input(uri, fmt, processor=checking, params=params).items()
    elif scheme in (None, "file"):
        try:
            target = netguard.confine_path(local_path(uri), settings.data_roots)
        except PathNotAllowed as exc:  # InvalidPath (422) stays itself
            raise type(exc)(str(exc), path=uri, problems=[InputProblem(line=None, column="input_uri",
                                                                       reason=str(exc))]) from None
        # The resolved path is what is read: no second interpretation of '..', '~', '-' or symlinks.
        source = inputs.open_input(str(target), fmt, processor=checking, params=params)
        source.name = uri  # problems name what the client sent
        rows = source.items()
        if source.format == inputs.InputFormat.DIR:
            rows = confined_listing(rows, netguard.resolve_roots(settings.data_roots))
    else:
        shown = "data:" if scheme == "data" else f"{scheme}://"
        raise InputUriNotAllowed(f"input_uri {uri!r}: this server does not read {shown} URIs; it reads {ACCEPTED_URIS}")
    return rows if checking is proc else refusals_as_403(rows)


def uri_scheme(uri: str) -> str | None:
    """The scheme fsspec would pick for ``uri`` (None: a local path)."""
    if "://" in uri:
        return uri.split("://", 1)[0].lower()
    if uri[:5].lower() == "data:":  # fsspec reads data: URLs too (RFC 2397), without "//"
        return "data"
    return None


def local_path(uri: str) -> str:
    """The local path a path or ``file://`` URL names."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise InputUriNotAllowed(f"input_uri {uri!r}: a file:// URL names a file on this server; write it "
                                 "file:///path (no host)")
    return url2pathname(parts.path)


def confining(settings: Settings, proc: Processor) -> Processor:
    """``proc`` for the readers, its params model confining path fields to the data roots.

    The readers validate every row against ``params_model``, so a refused path is reported like any bad
    value: with its line (or item) number and column. The copy only validates; batches still name ``proc``.
    """
    model = proc.params_model
    if model is None or not netguard.path_fields(model):
        return proc
    roots = netguard.resolve_roots(settings.data_roots)
    return dataclasses.replace(proc, params_model=netguard.confining_model(model, roots))


def confine_params(settings: Settings, proc: Processor, params: dict[str, Any]) -> None:
    """Refuse shared params whose path fields name files outside the data roots (before reading rows)."""
    model = proc.params_model
    found: list[InputProblem] = []
    malformed: list[InputProblem] = []
    roots = netguard.resolve_roots(settings.data_roots)
    for name in netguard.path_fields(model):
        assert model is not None
        alias = model.model_fields[name].alias
        for key in dict.fromkeys(k for k in (name, alias) if isinstance(k, str) and k in params):
            for reason in netguard.malformed_paths(model, name, params[key]):
                malformed.append(InputProblem(line=None, column=f"params.{key}", reason=reason))
            for reason in netguard.refused_paths(model, name, params[key], roots):
                found.append(InputProblem(line=None, column=f"params.{key}", reason=reason))
    if malformed:  # 422: not a path at all, wherever the roots are
        raise InputError(malformed)
    if found:
        raise PathNotAllowed(f"params: {found[0].reason}", problems=found)


def refusals_as_403(rows: Rows) -> Rows:
    """Rows as they come; when the input's problems include refused paths, those as one PathNotAllowed.

    The readers raise every problem together after the last row; path refusals (told apart by
    ``netguard.PATH_REFUSED``) outrank the rest: the answer is 403, with their lines and columns.
    """
    try:
        yield from rows
    except InputError as exc:
        refused = [p for p in exc.problems if netguard.PATH_REFUSED in p.reason]
        if not refused:
            raise
        noun = "path" if len(refused) == 1 else "paths"
        raise PathNotAllowed(f"{len(refused)} {noun} not allowed; the first: {refused[0]}",
                             problems=refused) from None


def confined_listing(rows: Rows, roots: tuple[Path, ...]) -> Rows:
    """A directory's or glob's files (each an item a processor opens), each inside the data roots.

    The directory itself was checked; a symlink in it may still point anywhere.
    """
    for key, payload in rows:
        try:
            netguard.confine_path(payload["path"], list(roots))
        except PathNotAllowed as exc:
            problem = InputProblem(line=None, column="path", reason=f"file {payload.get('name')}: {exc}")
            raise PathNotAllowed(str(problem), path=payload["path"], problems=[problem]) from None
        yield key, payload


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


def upload_rows(settings: Settings, path: Path, filename: str | None, fmt: str | None, proc: Processor,
                params: dict[str, Any]) -> Rows:
    confine_params(settings, proc, params)
    checking = confining(settings, proc)
    source = inputs.open_input(str(path), fmt, processor=checking, params=params)
    source.name = filename or "upload"  # problems name the file the user sent, not our temporary copy
    rows = source.items()
    return rows if checking is proc else refusals_as_403(rows)


def report(engine: Engine, proc: Processor, params: dict[str, Any], rows: Rows) -> ValidationReport:
    """Read every row without creating anything: the item count and every problem found."""
    count, found, seen = 0, [], []

    def counted() -> Rows:
        nonlocal count
        for row in rows:
            count += 1  # the valid rows, also when the reader then reports problems (after its last row)
            yield row

    try:
        engine.check_params(proc, params)
        seen.append(model_totals(proc, params, counted())[1])  # the cost model prices each row as it is read
    except InputError as exc:
        found = [Problem.model_validate(p) for p in problems(exc)]
    cost = seen[0] if seen else (count * proc.cost_per_item if proc.cost_per_item else None)
    return ValidationReport(valid=not found, processor=proc.name, items=count, problems=found,
                            estimated_cost=cost, cost_unit=proc.cost_unit if cost is not None else None)


def create(engine: Engine, opts: SubmitOptions, proc: Processor, settings: Settings, rows: Rows,
           source: str | None, tenant: str, idempotency: Idempotency | None = None) -> BatchInfo:
    """Create the batch; with ``idempotency``, raises ``IdempotencyConflict`` when the tenant used its key."""
    spec = spec_for(opts, proc, settings, source, tenant)
    if idempotency is not None:
        spec = spec.model_copy(update={"idempotency": idempotency})
    return engine.submit(spec, within_quota(engine, settings, tenant, rows), start=opts.start)


def within_quota(engine: Engine, settings: Settings, tenant: str, rows: Rows) -> Rows:
    """The rows, refusing the submission (429) once the tenant's queued items would pass its limit.

    The count is known only as the rows stream in; raising mid-way rolls the whole batch back.
    """
    limit = settings.tenant_max_queued
    if limit is None:
        return rows
    queued, _ = engine.store.tenant_usage(tenant)

    def refuse(adding: int) -> TenantLimit:
        return TenantLimit(f"tenant {tenant!r} has {queued} items queued; this submission would pass its limit of "
                           f"{limit} (it has at least {adding} items); retry when some have run",
                           settings.retry_after_s, limit, queued)

    if queued >= limit:
        raise refuse(1)

    def counted() -> Rows:
        for n, row in enumerate(rows, 1):
            if queued + n > limit:  # type: ignore[operator]
                raise refuse(n)
            yield row

    return counted()
