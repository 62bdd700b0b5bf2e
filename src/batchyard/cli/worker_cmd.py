"""``batchyard worker``: run the items of every batch in a store until SIGTERM/SIGINT.

For ``batchyard serve --workers 0`` (or many workers on one store): the first signal stops claiming,
lets in-flight items finish within the grace period, releases the rest and exits 0; a second one
leaves at once (the leases are recovered by the next worker or server to start).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Annotated, Any

import typer

from batchyard.cli.serve import ProcessorsOpt, StoreOpt, err, fail
from batchyard.cli.throttle_opts import (
    DiskPathOpt,
    MaxCpuOpt,
    MaxMemoryOpt,
    MinDiskOpt,
    ThresholdsFileOpt,
    throttle_from,
)
from batchyard.core import defaults
from batchyard.core import processor as registry
from batchyard.core.errors import BatchyardError
from batchyard.core.worker import Worker
from batchyard.store import open_store, safe_url

EXIT_INTERRUPTED = 130


def worker(
    store: StoreOpt = None,
    processors: ProcessorsOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Items run at once.")] =
        defaults.PARALLEL,
    name: Annotated[str | None, typer.Option("--name", help="Shown in /health (default host:pid).")] = None,
    grace: Annotated[float, typer.Option("--grace", min=0, help="Seconds in-flight items get on stop.")] =
        defaults.GRACE_SECONDS,
    tenant_max_running: Annotated[int | None, typer.Option(
        "--tenant-max-running", envvar="BATCHYARD_TENANT_MAX_RUNNING", min=1,
        help="Most items one tenant may have running across all workers (give every worker the same).")] = None,
    lease_seconds: Annotated[float, typer.Option(
        "--lease-seconds", envvar="BATCHYARD_LEASE_SECONDS", min=0.1,
        help="A worker silent this long is presumed dead and its items run again elsewhere (give every worker "
             "and server on the store the same; the server reads BATCHYARD_LEASE_SECONDS too).")] =
        defaults.LEASE_SECONDS,
    max_memory_percent: MaxMemoryOpt = None,
    min_disk_free_gb: MinDiskOpt = None,
    disk_path: DiskPathOpt = None,
    max_cpu_percent: MaxCpuOpt = None,
    thresholds_file: ThresholdsFileOpt = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Run items of every runnable batch in the store until SIGTERM/SIGINT, then stop gracefully."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        st = open_store(store)
        procs = registry.load(processors or [])
    except BatchyardError as exc:
        fail(str(exc))
    stop = threading.Event()
    signals = 0

    def handle(signum: int, frame: Any) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(EXIT_INTERRUPTED)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    w = Worker(st, procs, concurrency=concurrency, name=name, sources=processors or [],
               tenant_cap=tenant_max_running, lease_seconds=lease_seconds,
               throttle=throttle_from(max_memory_percent, min_disk_free_gb, disk_path, max_cpu_percent,
                                      thresholds_file))
    w.start()
    err.print(f"worker {w.name} on {safe_url(st.url)}: {', '.join(sorted(w.processors))}; {concurrency} at once",
              highlight=False)
    while not stop.wait(0.5):
        if not w.alive:
            break
    err.print("stopping: finishing in-flight items", highlight=False)
    try:
        w.stop(grace=grace)
    except Exception as exc:  # the pump died: say so and fail
        fail(f"worker failed: {exc}")
    finally:
        st.close()
    if not stop.is_set():
        fail("worker stopped unexpectedly")
