"""The ``batchyard`` command line."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from batchyard.api import fingerprint
from batchyard.cli.progress import ProgressView
from batchyard.core import processor as registry
from batchyard.core.engine import Engine
from batchyard.core.errors import (
    BatchyardError,
    ConfigError,
    InputError,
    InvalidTransition,
    NotFound,
    ProcessorNotFound,
)
from batchyard.core.models import BatchInfo, BatchSpec, FailurePolicy, Priority
from batchyard.io import inputs, outputs
from batchyard.io.manifest import write_manifest
from batchyard.store import open_store

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Run a function over every item of a batch: in parallel, durably, resumably.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

StoreOpt = Annotated[str | None, typer.Option("--store", envvar="BATCHYARD_STORE",
                                              help="Store path or URL (default ./.batchyard/batchyard.db).")]
ProcessorsOpt = Annotated[list[str] | None, typer.Option(
    "--processors", help="Module or .py file registering processors (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
InputFormatOpt = Annotated[inputs.InputFormat | None, typer.Option(
    "--input-format", help="Input format (default: from the extension; text when unknown).")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Directory inputs: include subdirectories.")]
ErrorsOnlyOpt = Annotated[bool, typer.Option("--errors-only", help="Export only the failed items.")]
ManifestOpt = Annotated[str | None, typer.Option("--manifest", help="Also write a manifest (JSON) to this file.")]
ManifestRefOpt = Annotated[str | None, typer.Option(
    "--manifest-ref", help="Result field holding each item's reference (default: ref, reference, swarm_ref or id).")]


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _engine(store: str | None, processors: list[str] | None = None) -> Engine:
    try:
        return Engine(open_store(store), processors or [])
    except BatchyardError as exc:
        fail(str(exc))


def _parse_params(pairs: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _batch_or_latest(engine: Engine, batch_id: str | None) -> BatchInfo:
    if batch_id:
        return engine.status(batch_id)
    info = engine.latest()
    if info is None:
        fail("no batches in this store yet")
    return info


def _exit_code(info: BatchInfo) -> int:
    if info.status == "completed" and info.items_failed == 0 and info.items_cancelled == 0:
        return EXIT_OK
    return EXIT_FAILED


def _print_summary(info: BatchInfo) -> None:
    s = outputs.summary(info)
    colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(info.status, "cyan")
    rate = f"{s['success_rate']:.1%}" if s["success_rate"] is not None else "n/a"
    reason = f" ({info.status_reason})" if info.status_reason else ""
    out.print(f"[bold]{info.batch_id}[/bold] [{colour}]{info.status}[/{colour}]{reason}", highlight=False)
    out.print(f"  items {info.items_total}: {info.items_succeeded} succeeded, {info.items_failed} failed, "
              f"{info.items_cancelled} cancelled, {info.items_pending + info.items_running} not done", highlight=False)
    thr = f", {info.throughput_per_s:,.1f} items/s" if info.throughput_per_s else ""
    out.print(f"  success rate {rate}, {info.attempts_total} attempts, {info.active_seconds:.2f}s{thr}",
              highlight=False)
    if info.cost_total:
        out.print(f"  cost {info.cost_total:.6g} {info.cost_unit}", highlight=False)


def _output_format(output: str, fmt: str | None) -> str:
    chosen = fmt or {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(Path(output).suffix.lower(), "json")
    if chosen not in outputs.FORMATS:
        fail(f"--format {chosen!r}: expected one of {', '.join(outputs.FORMATS)}")
    return chosen


def _write_output(store: Any, info: BatchInfo, output: str, fmt: str | None, errors_only: bool = False) -> None:
    chosen = _output_format(output, fmt)
    partial = "" if info.is_final else f" (partial: {info.batch_id} is {info.status}; items done so far)"
    if output == "-":
        outputs.write_results(store, info.batch_id, sys.stdout, chosen, errors_only=errors_only)
        if partial:
            err.print(partial.strip(" ()"), highlight=False)
        return
    tmp = Path(output + ".partial")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        n = outputs.write_results(store, info.batch_id, fh, chosen, errors_only=errors_only)
    tmp.replace(output)
    what = "failed items" if errors_only else "results"
    err.print(f"wrote {n} {what} to {output} ({chosen}){partial}", highlight=False)


def _write_manifest(store: Any, info: BatchInfo, path: str, ref_field: str | None) -> None:
    if path == "-":
        write_manifest(store, info.batch_id, sys.stdout, ref_field)
        return
    tmp = Path(path + ".partial")
    with open(tmp, "w", encoding="utf-8") as fh:
        n = write_manifest(store, info.batch_id, fh, ref_field)
    tmp.replace(path)
    err.print(f"wrote a manifest of {n} items to {path}", highlight=False)


class _Interrupts:
    """First SIGINT/SIGTERM: stop gracefully. Second: leave at once (leases recover on the next run)."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            os._exit(EXIT_INTERRUPTED)
        err.print("\n[yellow]stopping: finishing in-flight items (press Ctrl-C again to quit at once)[/yellow]")

    @property
    def stop(self) -> bool:
        return self.count > 0


@app.command()
def run(
    input: Annotated[str, typer.Argument(help="Input: a CSV, JSONL, JSON or text file, a directory, a glob, "
                                              "an fsspec URI (s3://, gs://, http://...), or - for stdin.")],
    processor: Annotated[str, typer.Option("--processor", "-p", help="Processor name.")],
    param: Annotated[list[str] | None, typer.Option("--param", help="Shared parameter KEY=VALUE (repeatable).")] = None,
    parallel: Annotated[int, typer.Option("--parallel", "-j", min=1, help="Items run at once.")] = 8,
    priority: Annotated[Priority, typer.Option("--priority")] = Priority.NORMAL,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write results here (- for stdout).")] = None,
    format: Annotated[str | None, typer.Option("--format", help="json, csv or jsonl (default: from --output).")] = None,
    input_format: InputFormatOpt = None,
    recursive: RecursiveOpt = False,
    errors_only: ErrorsOnlyOpt = False,
    manifest: ManifestOpt = None,
    manifest_ref: ManifestRefOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and count; create nothing.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Rerun only the failed items.")] = False,
    new: Annotated[bool, typer.Option("--new", help="Start a new batch even if this one ran before.")] = False,
    max_failures: Annotated[int | None, typer.Option("--max-failures", min=0)] = None,
    max_failure_rate: Annotated[float | None, typer.Option("--max-failure-rate", min=0.0, max=1.0)] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    store: StoreOpt = None,
    processors: ProcessorsOpt = None,
) -> None:
    """Run a batch in this process, with a progress bar; rerunning the same command resumes it."""
    params = _parse_params(param)
    if output:
        _output_format(output, format)  # a usage error is reported before any work is done
    try:
        registry.load(processors or [])
        proc = registry.get(processor)
        Engine.check_params(proc, params)
        source = inputs.open_input(input, input_format, processor=proc, params=params, recursive=recursive)
        if dry_run:
            n = source.count()
            out.print(f"dry run: {n} items from {source.name} ({source.format}) would run through "
                      f"{proc.name!r}; nothing was created", highlight=False)
            raise typer.Exit(EXIT_OK)
        engine = _engine(store, processors)
        fp = fingerprint(proc.name, params, source.fingerprint(), source.format)
        info = None if new else engine.store.find_resumable(fp)
        if info is not None:
            info = _reopen(engine, info, retry_failed)
        else:
            spec = BatchSpec(processor=proc.name, params=params, parallel=parallel, priority=priority,
                             failure_policy=FailurePolicy(max_failures=max_failures,
                                                          max_failure_rate=max_failure_rate),
                             description=description, tags=tag or [], source=source.name, fingerprint=fp)
            info = engine.submit(spec, source.items())
            err.print(f"created {info.batch_id}: {info.items_total} items", highlight=False)
    except (InputError, ConfigError, ProcessorNotFound) as exc:
        fail(str(exc))
    except BatchyardError as exc:
        fail(str(exc), EXIT_FAILED)
    info = _run_with_progress(engine, info)
    if output:
        _write_output(engine.store, info, output, format, errors_only)
    if manifest:
        _write_manifest(engine.store, info, manifest, manifest_ref)
    raise typer.Exit(_exit_code(info))


def _reopen(engine: Engine, info: BatchInfo, retry_failed: bool) -> BatchInfo:
    if retry_failed and info.items_failed and info.status in ("completed", "failed"):
        info = engine.retry(info.batch_id)
    if info.status == "paused":
        info = engine.resume(info.batch_id)
    elif info.status == "pending":
        info = engine.start(info.batch_id)
    done = info.items_succeeded + info.items_failed + info.items_cancelled
    verb = "already finished" if info.is_final else "resuming"
    err.print(f"{verb} {info.batch_id}: {done} of {info.items_total} items done", highlight=False)
    return info


def _run_with_progress(engine: Engine, info: BatchInfo) -> BatchInfo:
    if info.is_final:
        _print_summary(info)
        return info
    interrupts = _Interrupts()
    interrupts.install()
    with ProgressView(err, info) as view:
        final = engine.run(info.batch_id, on_progress=view.update, should_stop=lambda: interrupts.stop)
    _print_summary(final)
    if interrupts.stop and not final.is_final:
        err.print(f"[yellow]interrupted[/yellow]: {final.batch_id} is resumable; run the same command again "
                  "to continue", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    return final


@app.command()
def status(
    batch_id: Annotated[str | None, typer.Argument(help="Batch id (default: the latest batch).")] = None,
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Show a batch's status, counters, throughput and ETA."""
    engine = _engine(store)
    try:
        info = _batch_or_latest(engine, batch_id)
    except NotFound as exc:
        fail(str(exc))
    if json_:
        out.print_json(info.model_dump_json())
        return
    _print_summary(info)
    out.print(f"  processor {info.processor}, priority {info.priority}, parallel {info.parallel}, "
              f"{info.progress_percent:.1f}% done", highlight=False)
    if info.pause_reason:
        out.print(f"  paused: {info.pause_reason}", highlight=False)
    if info.estimated_completion and not info.is_final:
        out.print(f"  estimated completion {info.estimated_completion:%Y-%m-%d %H:%M:%S} UTC", highlight=False)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option("--status")] = None,
    processor: Annotated[str | None, typer.Option("--processor")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    json_: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """List batches, newest first."""
    batches = _engine(store).list(status=status, processor=processor, limit=limit)
    if json_:
        out.print_json(json.dumps([json.loads(b.model_dump_json()) for b in batches]))
        return
    table = Table("batch", "status", "processor", "done", "failed", "total", "created")
    for b in batches:
        table.add_row(b.batch_id, b.status + (f" ({b.pause_reason})" if b.pause_reason else ""), b.processor,
                      str(b.items_succeeded), str(b.items_failed), str(b.items_total),
                      f"{b.created_at:%Y-%m-%d %H:%M:%S}")
    out.print(table)


def _control(action: str, batch_id: str, store: str | None) -> None:
    engine = _engine(store)
    try:
        info = getattr(engine, action)(batch_id)
    except NotFound as exc:
        fail(str(exc))
    except InvalidTransition as exc:
        fail(str(exc), EXIT_FAILED)
    out.print(f"{info.batch_id} {info.status}" + (f" ({info.pause_reason})" if info.pause_reason else ""),
              highlight=False)


@app.command()
def pause(batch_id: str, store: StoreOpt = None) -> None:
    """Pause a running batch: no new items start; in-flight items finish."""
    _control("pause", batch_id, store)


@app.command()
def resume(batch_id: str, store: StoreOpt = None) -> None:
    """Resume a paused batch."""
    _control("resume", batch_id, store)


@app.command()
def cancel(batch_id: str, store: StoreOpt = None) -> None:
    """Cancel a batch: pending items are cancelled, in-flight items finish."""
    _control("cancel", batch_id, store)


@app.command()
def retry(batch_id: str, store: StoreOpt = None, processors: ProcessorsOpt = None) -> None:
    """Rerun the failed items of a finished batch, in this process."""
    engine = _engine(store, processors)
    try:
        info = engine.retry(batch_id)
    except NotFound as exc:
        fail(str(exc))
    except InvalidTransition as exc:
        fail(str(exc), EXIT_FAILED)
    info = _run_with_progress(engine, info)
    raise typer.Exit(_exit_code(info))


@app.command()
def results(
    batch_id: str,
    output: Annotated[str, typer.Option("--output", "-o", help="File to write (- for stdout).")] = "-",
    format: Annotated[str | None, typer.Option("--format", help="json, csv or jsonl.")] = None,
    errors_only: ErrorsOnlyOpt = False,
    manifest: ManifestOpt = None,
    manifest_ref: ManifestRefOpt = None,
    store: StoreOpt = None,
) -> None:
    """Export a batch's results (what is done so far, if it is still running)."""
    engine = _engine(store)
    try:
        info = engine.status(batch_id)
    except NotFound as exc:
        fail(str(exc))
    if manifest:
        _write_manifest(engine.store, info, manifest, manifest_ref)
        if output == "-":
            return
    _write_output(engine.store, info, output, format, errors_only)


@app.command()
def validate(
    input: Annotated[str, typer.Argument(help="Input to check (any input `run` takes).")],
    processor: Annotated[str, typer.Option("--processor", "-p", help="Processor name.")],
    param: Annotated[list[str] | None, typer.Option("--param", help="Shared parameter KEY=VALUE (repeatable).")] = None,
    input_format: InputFormatOpt = None,
    recursive: RecursiveOpt = False,
    processors: ProcessorsOpt = None,
) -> None:
    """Check an input against a processor's parameters without creating a batch; print every problem."""
    try:
        registry.load(processors or [])
        proc = registry.get(processor)
    except BatchyardError as exc:
        fail(str(exc))
    params = _parse_params(param)
    try:
        source = inputs.open_input(input, input_format, processor=proc, params=params, recursive=recursive)
        n = source.count()
    except InputError as exc:
        for problem in exc.problems:
            out.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        noun = "problem" if len(exc.problems) == 1 else "problems"
        err.print(f"[red]{input}: {len(exc.problems)} {noun}[/red]", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    out.print(f"{source.name}: {n} items ({source.format}), valid for {proc.name!r}", highlight=False)


@app.command()
def cleanup(
    days_old: Annotated[float, typer.Option("--days-old", min=0, help="Delete final batches older than this.")],
    store: StoreOpt = None,
) -> None:
    """Delete finished batches older than N days, with their items."""
    removed = _engine(store).cleanup(days_old)
    out.print(f"removed {len(removed)} batches", highlight=False)


@app.command("processors")
def processors_(json_: JsonOpt = False, processors: ProcessorsOpt = None) -> None:
    """List the processors available, with their parameter schemas."""
    try:
        procs = registry.load(processors or [])
    except BatchyardError as exc:
        fail(str(exc))
    if json_:
        out.print_json(json.dumps([p.describe() for p in procs]))
        return
    table = Table("name", "mode", "description", "parameters")
    for p in procs:
        schema = p.params_schema() or {}
        table.add_row(p.name, p.mode, p.description, ", ".join(schema.get("properties", {})))
    out.print(table)


from batchyard.cli.db_cmd import db  # noqa: E402  (the service commands live in their own modules)
from batchyard.cli.serve import serve  # noqa: E402
from batchyard.cli.worker_cmd import worker  # noqa: E402

app.command("serve")(serve)
app.command("worker")(worker)
app.add_typer(db, name="db")


def main() -> None:
    app()
