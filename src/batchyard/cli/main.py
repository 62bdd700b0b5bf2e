"""The ``batchyard`` command line."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, NoReturn, Protocol

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from batchyard.api import fingerprint
from batchyard.cli.env import split_paths
from batchyard.cli.progress import ProgressView
from batchyard.cli.throttle_opts import (
    DiskPathOpt,
    MaxCpuOpt,
    MaxMemoryOpt,
    MinDiskOpt,
    ThresholdsFileOpt,
    throttle_from,
)
from batchyard.core import processor as registry
from batchyard.core.engine import Engine
from batchyard.core.errors import (
    BatchyardError,
    ConfigError,
    InputError,
    InputProblem,
    InvalidTransition,
    NotFound,
    ProcessorNotFound,
)
from batchyard.core.models import BatchInfo, BatchSpec, FailurePolicy, Priority
from batchyard.core.throttle import Throttle
from batchyard.io import inputs, outputs
from batchyard.io.manifest import write_manifest
from batchyard.store import open_store

if TYPE_CHECKING:
    from batchyard.cli.remote import RemoteBackend

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Run a function over every item of a batch: in parallel, durably, resumably.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

StoreOpt = Annotated[str | None, typer.Option("--store", envvar="BATCHYARD_STORE",
                                              help="Store path or URL (default ./.batchyard/batchyard.db).")]
ProcessorsOpt = Annotated[list[str] | None, typer.Option(
    "--processors", envvar="BATCHYARD_PROCESSORS", callback=split_paths,
    help="Module or .py file registering processors (repeatable; BATCHYARD_PROCESSORS: separated like PATH).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
InputFormatOpt = Annotated[inputs.InputFormat | None, typer.Option(
    "--input-format", envvar="BATCHYARD_INPUT_FORMAT",
    help="Input format (default: from the extension; text when unknown).")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", envvar="BATCHYARD_RECURSIVE",
                                            help="Directory inputs: include subdirectories.")]
ErrorsOnlyOpt = Annotated[bool, typer.Option("--errors-only", envvar="BATCHYARD_ERRORS_ONLY",
                                             help="Export only the failed items.")]
ManifestOpt = Annotated[str | None, typer.Option("--manifest", envvar="BATCHYARD_MANIFEST",
                                                 help="Also write a manifest (JSON) to this file.")]
ManifestRefOpt = Annotated[str | None, typer.Option(
    "--manifest-ref", envvar="BATCHYARD_MANIFEST_REF",
    help="Result field holding each item's reference (default: ref, reference, swarm_ref or id).")]
# The batch's own options, shared by run, validate and submit. Each can come from the environment, so that a
# container runs a batch with no arguments (`BATCHYARD_INPUT=... BATCHYARD_PROCESSOR=... batchyard run`).
ProcessorOpt = Annotated[str, typer.Option("--processor", "-p", envvar="BATCHYARD_PROCESSOR",
                                           help="Processor name.")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", help="Shared parameter KEY=VALUE (repeatable; the value is JSON if it parses, else a string).")]
ParamsJsonOpt = Annotated[str | None, typer.Option(
    "--params-json", envvar="BATCHYARD_PARAMS",
    help="Shared parameters as a JSON object (BATCHYARD_PARAMS); --param overrides its keys.")]
ParallelOpt = Annotated[int, typer.Option("--parallel", "-j", envvar="BATCHYARD_PARALLEL", min=1,
                                          help="Items run at once.")]
PriorityOpt = Annotated[Priority, typer.Option("--priority", envvar="BATCHYARD_PRIORITY")]
MaxFailuresOpt = Annotated[int | None, typer.Option("--max-failures", envvar="BATCHYARD_MAX_FAILURES", min=0)]
MaxFailureRateOpt = Annotated[float | None, typer.Option("--max-failure-rate", envvar="BATCHYARD_MAX_FAILURE_RATE",
                                                         min=0.0, max=1.0)]
DescriptionOpt = Annotated[str | None, typer.Option("--description", envvar="BATCHYARD_DESCRIPTION")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", envvar="BATCHYARD_TAGS",
                                                  help="Tag (repeatable; BATCHYARD_TAGS: separated by spaces).")]
UrlOpt = Annotated[str | None, typer.Option(
    "--url", envvar="BATCHYARD_URL", help="A batchyard server (http://host:8000): act there, not on the local store.")]
ApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", envvar="BATCHYARD_API_KEY", help="API key for the server given by --url.")]
BudgetOpt = Annotated[float | None, typer.Option(
    "--budget", envvar="BATCHYARD_BUDGET", min=0.0,
    help="The most the batch may spend (in its processor's cost unit): it pauses (budget_reached) first.")]

WATCH_POLL_S = 0.25  # a local watch polls the store's O(1) status read: local batches have no event stream


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
    why = info.status_reason or (info.pause_reason if info.status == "paused" else None)
    reason = f" ({why})" if why else ""
    out.print(f"[bold]{info.batch_id}[/bold] [{colour}]{info.status}[/{colour}]{reason}", highlight=False)
    out.print(f"  items {info.items_total}: {info.items_succeeded} succeeded, {info.items_failed} failed, "
              f"{info.items_cancelled} cancelled, {info.items_pending + info.items_running} not done", highlight=False)
    thr = f", {info.throughput_per_s:,.1f} items/s" if info.throughput_per_s else ""
    out.print(f"  success rate {rate}, {info.attempts_total} attempts, {info.active_seconds:.2f}s{thr}",
              highlight=False)
    _print_cost(info)


def _print_cost(info: BatchInfo) -> None:
    """Spent, estimated, projected and budget, in the batch's unit: those it has."""
    unit = info.cost_unit
    parts = [f"{info.cost_total:.6g} {unit} spent"] if info.cost_total or info.budget is not None else []
    if info.cost_estimated is not None:
        parts.append(f"estimated {info.cost_estimated:.6g}")
    if info.cost_projected is not None and not info.is_final and (info.cost_estimated is not None or info.cost_total):
        parts.append(f"projected {info.cost_projected:.6g}")
    if info.budget is not None:
        parts.append(f"budget {info.budget:.6g}")
    if parts:
        out.print("  cost " + ", ".join(parts), highlight=False)
    if info.status == "paused" and info.pause_reason == "budget_reached":
        out.print(f"  budget reached: raise it to continue (batchyard resume {info.batch_id} --budget AMOUNT)",
                  highlight=False)


def _print_details(info: BatchInfo) -> None:
    out.print(f"  processor {info.processor}, priority {info.priority}, parallel {info.parallel}, "
              f"{info.progress_percent:.1f}% done", highlight=False)
    if info.pause_reason:
        out.print(f"  paused: {info.pause_reason}", highlight=False)
    if info.throttled:
        out.print(f"  {info.throttled}", highlight=False)
    if info.resource is not None:
        r = info.resource
        held = f" of {r.capacity:.6g} used ({r.utilization_percent:.3g}%)" if r.capacity else " used"
        out.print(f"  resource {r.status}: {r.used:.6g}{held}", highlight=False)
    if info.estimated_completion and not info.is_final:
        out.print(f"  estimated completion {info.estimated_completion:%Y-%m-%d %H:%M:%S} UTC", highlight=False)


def print_control(info: BatchInfo) -> None:
    """One line after an action: ``batch_... paused (user)``; the id comes first, for scripts."""
    out.print(f"{info.batch_id} {info.status}" + (f" ({info.pause_reason})" if info.pause_reason else ""),
              highlight=False)


def print_problems(problems: list[InputProblem]) -> None:
    """Every problem of an input, one a line on stdout (so they can be piped)."""
    for problem in problems:
        out.print(str(problem), highlight=False, markup=False, soft_wrap=True)


def fail_problems(problems: list[InputProblem], name: str) -> NoReturn:
    """An invalid input: every problem, then how many; exit 2."""
    print_problems(problems)
    noun = "problem" if len(problems) == 1 else "problems"
    err.print(f"[red]{name}: {len(problems)} {noun}[/red]", highlight=False)
    raise typer.Exit(EXIT_USAGE)


def _output_format(output: str, fmt: str | None) -> str:
    chosen = fmt or {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(Path(output).suffix.lower(), "json")
    if chosen not in outputs.FORMATS:
        fail(f"--format {chosen!r}: expected one of {', '.join(outputs.FORMATS)}")
    return chosen


def _write_output(backend: Backend, info: BatchInfo, output: str, fmt: str | None,
                  errors_only: bool = False) -> None:
    chosen = _output_format(output, fmt)
    partial = "" if info.is_final else f" (partial: {info.batch_id} is {info.status}; items done so far)"
    if output == "-":
        sys.stdout.flush()  # the export writes bytes under the text layer: nothing may be left above it
        backend.export(info, sys.stdout.buffer, chosen, errors_only)
        sys.stdout.buffer.flush()
        if partial:
            err.print(partial.strip(" ()"), highlight=False)
        return
    tmp = Path(output + ".partial")
    try:
        with open(tmp, "wb") as fh:
            n = backend.export(info, fh, chosen, errors_only)
    except BaseException:  # a failed or interrupted export leaves no half file behind
        tmp.unlink(missing_ok=True)
        raise
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


class Backend(Protocol):
    """Where the batch commands read and act: this machine's store (``LocalBackend``) or a server
    (``remote.RemoteBackend``, with --url). Both hand back ``BatchInfo`` and report their own errors as one
    line and an exit code, so each command is written once and prints the same whichever it talks to."""

    def batch(self, batch_id: str | None) -> BatchInfo:
        """The batch, or the latest one when ``batch_id`` is None."""
        ...

    def batches(self, status: str | None, processor: str | None, limit: int) -> list[BatchInfo]: ...

    def control(self, action: str, batch_id: str) -> BatchInfo:
        """``start``, ``pause``, ``resume``, ``cancel`` or ``retry``."""
        ...

    def set_budget(self, batch_id: str, budget: float | None) -> BatchInfo:
        """Set the batch's budget (a batch paused at its old one stays paused until resumed)."""
        ...

    def run(self, info: BatchInfo) -> BatchInfo:
        """Bring the batch to a final state with a progress bar (here, or by watching the server run it)."""
        ...

    def watch(self, info: BatchInfo) -> BatchInfo:
        """Show the batch's progress until it is final, wherever it runs."""
        ...

    def export(self, info: BatchInfo, out: IO[bytes], fmt: str, errors_only: bool) -> int:
        """Write the results to ``out`` (UTF-8); returns the number of items written."""
        ...

    def close(self) -> None: ...


@contextmanager
def _local_errors() -> Iterator[None]:
    try:
        yield
    except NotFound as exc:
        fail(str(exc))
    except InvalidTransition as exc:
        fail(str(exc), EXIT_FAILED)


class LocalBackend:
    """The batch commands on the local store, through the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def batch(self, batch_id: str | None) -> BatchInfo:
        with _local_errors():
            return _batch_or_latest(self.engine, batch_id)

    def batches(self, status: str | None, processor: str | None, limit: int) -> list[BatchInfo]:
        return self.engine.list(status=status, processor=processor, limit=limit)

    def control(self, action: str, batch_id: str) -> BatchInfo:
        with _local_errors():
            return getattr(self.engine, action)(batch_id)  # type: ignore[no-any-return]

    def set_budget(self, batch_id: str, budget: float | None) -> BatchInfo:
        with _local_errors():
            return self.engine.set_budget(batch_id, budget, resume=False)

    def run(self, info: BatchInfo) -> BatchInfo:
        return _run_with_progress(self.engine, info)

    def watch(self, info: BatchInfo) -> BatchInfo:
        def poll(on_progress: Callable[[BatchInfo], None]) -> BatchInfo:
            current = info
            while not current.is_final:
                time.sleep(WATCH_POLL_S)
                with _local_errors():  # deleted while watched (cleanup): say so and stop
                    current = self.engine.status(info.batch_id)
                on_progress(current)
            return current

        return watch_with_progress(info, poll)

    def export(self, info: BatchInfo, out: IO[bytes], fmt: str, errors_only: bool) -> int:
        text = io.TextIOWrapper(out, encoding="utf-8", newline="")
        try:
            return outputs.write_results(self.engine.store, info.batch_id, text, fmt, errors_only=errors_only)
        finally:
            text.flush()
            text.detach()  # ``out`` belongs to the caller: the wrapper must not close it

    def close(self) -> None:
        self.engine.store.close()


def _backend(store: str | None, url: str | None, api_key: str | None,
             processors: list[str] | None = None) -> Backend:
    if url:
        return _remote(url, api_key)
    return LocalBackend(_engine(store, processors))


def _remote(url: str, api_key: str | None) -> RemoteBackend:
    from batchyard.cli.remote import RemoteBackend  # httpx loads only when a server is asked for

    return RemoteBackend(url, api_key)


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
    input: Annotated[str, typer.Argument(envvar="BATCHYARD_INPUT",
                                         help="Input: a CSV, JSONL, JSON or text file, a directory, a glob, "
                                              "an fsspec URI (s3://, gs://, http://...), or - for stdin.")],
    processor: ProcessorOpt,
    param: ParamOpt = None,
    params_json: ParamsJsonOpt = None,
    parallel: ParallelOpt = 8,
    priority: PriorityOpt = Priority.NORMAL,
    output: Annotated[str | None, typer.Option("--output", "-o", envvar="BATCHYARD_OUTPUT",
                                               help="Write results here (- for stdout).")] = None,
    format: Annotated[str | None, typer.Option("--format", envvar="BATCHYARD_FORMAT",
                                               help="json, csv or jsonl (default: from --output).")] = None,
    input_format: InputFormatOpt = None,
    recursive: RecursiveOpt = False,
    errors_only: ErrorsOnlyOpt = False,
    manifest: ManifestOpt = None,
    manifest_ref: ManifestRefOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", envvar="BATCHYARD_DRY_RUN",
                                          help="Validate and count; create nothing.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", envvar="BATCHYARD_RETRY_FAILED",
                                               help="Rerun only the failed items.")] = False,
    new: Annotated[bool, typer.Option("--new", envvar="BATCHYARD_NEW",
                                      help="Start a new batch even if this one ran before.")] = False,
    max_failures: MaxFailuresOpt = None,
    max_failure_rate: MaxFailureRateOpt = None,
    description: DescriptionOpt = None,
    tag: TagOpt = None,
    budget: BudgetOpt = None,
    max_memory_percent: MaxMemoryOpt = None,
    min_disk_free_gb: MinDiskOpt = None,
    disk_path: DiskPathOpt = None,
    max_cpu_percent: MaxCpuOpt = None,
    thresholds_file: ThresholdsFileOpt = None,
    store: StoreOpt = None,
    processors: ProcessorsOpt = None,
) -> None:
    """Run a batch in this process, with a progress bar; rerunning the same command resumes it.

    Every option can come from a BATCHYARD_* variable instead (INPUT from BATCHYARD_INPUT, --processor from
    BATCHYARD_PROCESSOR, --params-json from BATCHYARD_PARAMS...), for containers run in batch mode.
    """
    params = {**_parse_params_json(params_json), **_parse_params(param)}
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
            if budget is not None:  # a new budget for the batch being resumed (one reached it, say)
                info = engine.store.set_budget(info.batch_id, budget)
            info = _reopen(engine, info, retry_failed)
        else:
            spec = BatchSpec(processor=proc.name, params=params, parallel=parallel, priority=priority,
                             failure_policy=FailurePolicy(max_failures=max_failures,
                                                          max_failure_rate=max_failure_rate),
                             description=description, tags=tag or [], source=source.name, fingerprint=fp,
                             budget=budget)
            info = engine.submit(spec, source.items())
            err.print(f"created {info.batch_id}: {info.items_total} items", highlight=False)
    except (InputError, ConfigError, ProcessorNotFound) as exc:
        fail(str(exc))
    except BatchyardError as exc:
        fail(str(exc), EXIT_FAILED)
    # Outputs go where --output points: that is the disk whose free space --min-disk-free-gb watches.
    throttle = throttle_from(max_memory_percent, min_disk_free_gb, disk_path, max_cpu_percent, thresholds_file,
                             default_disk=str(Path(output).resolve().parent) if output and output != "-" else ".")
    info = _run_with_progress(engine, info, throttle)
    if output:
        _write_output(LocalBackend(engine), info, output, format, errors_only)
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


def _follow(info: BatchInfo, follow: Callable[[Callable[[BatchInfo], None]], BatchInfo]) -> BatchInfo:
    """Draw progress while ``follow`` brings the batch to a final state, calling back with each new status
    (it runs the batch here, or watches it run elsewhere); then print the summary."""
    if info.is_final:
        _print_summary(info)
        return info
    with ProgressView(err, info) as view:
        final = follow(view.update)
    _print_summary(final)
    return final


def watch_with_progress(info: BatchInfo, follow: Callable[[Callable[[BatchInfo], None]], BatchInfo]) -> BatchInfo:
    """``_follow`` for a batch that runs elsewhere: Ctrl-C stops watching and leaves the batch as it is."""
    try:
        return _follow(info, follow)
    except KeyboardInterrupt:
        err.print(f"\nstopped watching {info.batch_id}; it goes on", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _watch_to_end(backend: Backend, info: BatchInfo) -> NoReturn:
    """Follow the batch until it is final, end with what ``status`` shows, exit by its outcome (as ``run``)."""
    final = backend.watch(info)
    _print_details(final)
    raise typer.Exit(_exit_code(final))


def _run_with_progress(engine: Engine, info: BatchInfo, throttle: Throttle | None = None) -> BatchInfo:
    interrupts = _Interrupts()
    if not info.is_final:
        interrupts.install()
    final = _follow(info, lambda update: engine.run(info.batch_id, on_progress=update,
                                                    should_stop=lambda: interrupts.stop, throttle=throttle))
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
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show a batch's status, counters, throughput and ETA."""
    with closing(_backend(store, url, api_key)) as backend:
        info = backend.batch(batch_id)
    if json_:
        out.print_json(info.model_dump_json())
        return
    _print_summary(info)
    _print_details(info)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option("--status")] = None,
    processor: Annotated[str | None, typer.Option("--processor")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    json_: JsonOpt = False,
    store: StoreOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """List batches, newest first."""
    with closing(_backend(store, url, api_key)) as backend:
        batches = backend.batches(status, processor, limit)
    if json_:
        out.print_json(json.dumps([json.loads(b.model_dump_json()) for b in batches]))
        return
    # Light borders so an 80-column terminal fits a whole row; a batch id is copied, so never cut
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("batch", no_wrap=True)
    table.add_column("status", min_width=9)
    table.add_column("processor", min_width=9)
    for name in ("done", "failed", "total"):
        table.add_column(name, justify="right")
    table.add_column("created", no_wrap=True)
    for b in batches:
        table.add_row(b.batch_id, b.status + (f" ({b.pause_reason})" if b.pause_reason else ""), b.processor,
                      str(b.items_succeeded), str(b.items_failed), str(b.items_total),
                      f"{b.created_at:%m-%d %H:%M}")
    out.print(table)


def _control(action: str, batch_id: str, store: str | None, url: str | None, api_key: str | None) -> None:
    with closing(_backend(store, url, api_key)) as backend:
        print_control(backend.control(action, batch_id))


@app.command()
def start(batch_id: str, store: StoreOpt = None, url: UrlOpt = None, api_key: ApiKeyOpt = None) -> None:
    """Start a pending batch (one made with `submit --no-start`): the workers of its server or store take it."""
    _control("start", batch_id, store, url, api_key)


@app.command()
def pause(batch_id: str, store: StoreOpt = None, url: UrlOpt = None, api_key: ApiKeyOpt = None) -> None:
    """Pause a running batch: no new items start; in-flight items finish."""
    _control("pause", batch_id, store, url, api_key)


@app.command()
def resume(batch_id: str, budget: BudgetOpt = None, store: StoreOpt = None, url: UrlOpt = None,
           api_key: ApiKeyOpt = None) -> None:
    """Resume a paused batch; --budget first sets a new budget (for a batch that reached its own)."""
    with closing(_backend(store, url, api_key)) as backend:
        if budget is not None:
            backend.set_budget(batch_id, budget)
        print_control(backend.control("resume", batch_id))


@app.command()
def cancel(batch_id: str, store: StoreOpt = None, url: UrlOpt = None, api_key: ApiKeyOpt = None) -> None:
    """Cancel a batch: pending items are cancelled, in-flight items finish."""
    _control("cancel", batch_id, store, url, api_key)


@app.command()
def retry(batch_id: str, store: StoreOpt = None, processors: ProcessorsOpt = None, url: UrlOpt = None,
          api_key: ApiKeyOpt = None) -> None:
    """Rerun the failed items of a finished batch: in this process, or on the server with --url."""
    with closing(_backend(store, url, api_key, processors)) as backend:
        info = backend.run(backend.control("retry", batch_id))
    raise typer.Exit(_exit_code(info))


@app.command()
def watch(
    batch_id: Annotated[str | None, typer.Argument(help="Batch id (default: the latest batch).")] = None,
    store: StoreOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show a batch's progress live until it ends, then its status; exit 0 if every item succeeded, else 1."""
    with closing(_backend(store, url, api_key)) as backend:
        _watch_to_end(backend, backend.batch(batch_id))


@app.command()
def results(
    batch_id: str,
    output: Annotated[str, typer.Option("--output", "-o", help="File to write (- for stdout).")] = "-",
    format: Annotated[str | None, typer.Option("--format", help="json, csv or jsonl.")] = None,
    errors_only: ErrorsOnlyOpt = False,
    manifest: ManifestOpt = None,
    manifest_ref: ManifestRefOpt = None,
    store: StoreOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Export a batch's results (what is done so far, if it is still running)."""
    if manifest and url:
        fail("--manifest reads the local store; a server does not serve manifests (drop --url, or use --store)")
    with closing(_backend(store, url, api_key)) as backend:
        info = backend.batch(batch_id)
        if manifest:
            assert isinstance(backend, LocalBackend)
            _write_manifest(backend.engine.store, info, manifest, manifest_ref)
            if output == "-":
                return
        _write_output(backend, info, output, format, errors_only)


@app.command()
def submit(
    input: Annotated[str, typer.Argument(envvar="BATCHYARD_INPUT",
                                         help="A CSV, JSONL, JSON or text file to upload, or - for stdin.")],
    processor: ProcessorOpt,
    param: ParamOpt = None,
    params_json: ParamsJsonOpt = None,
    parallel: ParallelOpt = 8,
    priority: PriorityOpt = Priority.NORMAL,
    tag: TagOpt = None,
    description: DescriptionOpt = None,
    max_failures: MaxFailuresOpt = None,
    max_failure_rate: MaxFailureRateOpt = None,
    input_format: InputFormatOpt = None,
    no_start: Annotated[bool, typer.Option("--no-start", help="Create it pending; start it later.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and count on the server; create nothing.")]
        = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow its progress until it ends; exit like `run`.")] = False,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Upload a file to a server (--url or BATCHYARD_URL) as a new batch; print its id and status."""
    if not url:
        fail("submit sends a batch to a server: give --url or set BATCHYARD_URL (`batchyard run` runs it here)")
    params = {**_parse_params_json(params_json), **_parse_params(param)}
    with closing(_remote(url, api_key)) as backend:
        info = backend.submit(input, processor, params=params, parallel=parallel, priority=priority,
                              tags=tag or [], description=description, max_failures=max_failures,
                              max_failure_rate=max_failure_rate, input_format=input_format,
                              start=not no_start, dry_run=dry_run)
        if info is not None and wait:
            _watch_to_end(backend, info)


def _parse_params_json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        fail(f"--params-json (BATCHYARD_PARAMS): not JSON: {exc}")
    if not isinstance(value, dict):
        fail("--params-json (BATCHYARD_PARAMS): expected a JSON object")
    return value


@app.command()
def validate(
    input: Annotated[str, typer.Argument(envvar="BATCHYARD_INPUT", help="Input to check (any input `run` takes).")],
    processor: ProcessorOpt,
    param: ParamOpt = None,
    params_json: ParamsJsonOpt = None,
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
    params = {**_parse_params_json(params_json), **_parse_params(param)}
    try:
        source = inputs.open_input(input, input_format, processor=proc, params=params, recursive=recursive)
        n = source.count()
    except InputError as exc:
        fail_problems(exc.problems, input)
    out.print(f"{source.name}: {n} items ({source.format}), valid for {proc.name!r}", highlight=False)


@app.command()
def cleanup(
    days_old: Annotated[float, typer.Option("--days-old", envvar="BATCHYARD_DAYS_OLD", min=0,
                                            help="Delete final batches older than this.")],
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


from batchyard.cli.cost_cmd import budget_cmd, estimate  # noqa: E402
from batchyard.cli.db_cmd import db  # noqa: E402
from batchyard.cli.keys_cmd import keys, webhook_secret  # noqa: E402  (service commands: their own modules)
from batchyard.cli.serve import serve  # noqa: E402
from batchyard.cli.worker_cmd import worker  # noqa: E402
from batchyard.cli.workers_cmd import workers  # noqa: E402

app.command("serve")(serve)
app.command("estimate")(estimate)
app.command("budget")(budget_cmd)
app.command("worker")(worker)
app.command("workers")(workers)
app.add_typer(db, name="db")
app.add_typer(keys, name="keys")
app.command("webhook-secret")(webhook_secret)


def main() -> None:
    app()
