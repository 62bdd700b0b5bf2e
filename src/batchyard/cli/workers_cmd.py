"""``batchyard workers``: the workers registered on a store (or a server's), and what each one runs.

Read from the store's ``workers`` table (one row per worker, written by its heartbeat) or, with ``--url``,
from the server's ``/health``, which lists the same rows. A worker is *live* while its last heartbeat is
younger than the lease; one that is silent longer is presumed dead and its items go back to pending at
the next reap by any worker, so it is hidden unless ``--all`` asks for it.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from batchyard.cli.serve import StoreOpt, fail
from batchyard.core import defaults
from batchyard.core.errors import BatchyardError
from batchyard.core.models import WorkerInfo
from batchyard.store import open_store

out = Console(soft_wrap=True)


def _read(store: str | None, url: str | None, api_key: str | None) -> list[WorkerInfo]:
    if url:
        from batchyard.client import ApiError, Client, ConnectionFailed  # httpx only when a server is asked for

        try:
            with Client(url, api_key=api_key) as client:
                return list(client.health().workers)
        except (ConnectionFailed, ApiError) as exc:
            fail(str(exc))
    try:
        st = open_store(store)
    except BatchyardError as exc:
        fail(str(exc))
    try:
        return st.list_workers()
    finally:
        st.close()


def _age(at: datetime, now: float) -> float:
    # The heartbeat is written by the store's clock (the database's, for PostgreSQL): a small skew with
    # this machine's clock must not show as a negative age.
    return max(0.0, now - at.timestamp())


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _ago(seconds: float) -> str:
    return f"{_span(seconds)} ago"


def _running(w: WorkerInfo) -> str:
    held = {batch: n for batch, n in w.running.items() if n}
    return "\n".join(f"{batch}: {n}" for batch, n in sorted(held.items())) or "idle"


def workers(
    store: StoreOpt = None,
    url: Annotated[str | None, typer.Option(
        "--url", envvar="BATCHYARD_URL", help="A batchyard server (http://host:8000): list its workers.")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="BATCHYARD_API_KEY", help="API key for the server given by --url.")] = None,
    lease_seconds: Annotated[float, typer.Option(
        "--lease-seconds", envvar="BATCHYARD_LEASE_SECONDS", min=0.1,
        help="The workers' lease: silent longer than this, a worker counts as dead.")] = defaults.LEASE_SECONDS,
    all_: Annotated[bool, typer.Option("--all", help="Also list workers silent for longer than the lease.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the live workers on the store: host, pid, heartbeat, processors and what each one runs."""
    found = _read(store, url, api_key)
    now = time.time()
    rows: list[tuple[WorkerInfo, float, bool]] = []
    for w in found:
        age = _age(w.heartbeat_at, now)
        rows.append((w, age, age <= lease_seconds))
    shown = [r for r in rows if all_ or r[2]]
    if json_:
        data: list[dict[str, Any]] = [{**json.loads(w.model_dump_json()), "heartbeat_age_s": round(age, 3),
                                       "alive": alive} for w, age, alive in shown]
        out.print_json(json.dumps(data))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("worker", no_wrap=True)
    table.add_column("host", no_wrap=True)
    table.add_column("pid", justify="right")
    table.add_column("up", justify="right", no_wrap=True)
    table.add_column("heartbeat", no_wrap=True)
    table.add_column("at once", justify="right")
    table.add_column("processors")
    table.add_column("running (items held)", no_wrap=True)  # batch ids are never cut: one per line
    for w, age, alive in shown:
        beat = _ago(age) if alive else f"{_ago(age)}, silent"
        table.add_row(w.name, w.hostname, str(w.pid), _span(_age(w.started_at, now)), beat, str(w.concurrency),
                      ", ".join(w.processors), _running(w))
    if shown:
        out.print(table)
    live = sum(1 for r in rows if r[2])
    silent = len(rows) - live
    note = f"; {silent} silent for over {lease_seconds:g}s (--all lists them)" if silent and not all_ else ""
    out.print(f"{live} live worker{'s' if live != 1 else ''}{note}", highlight=False)
