"""Helpers for the fault tests: hostile and side-effecting processors, real ``batchyard worker`` processes,
and the checker that turns a store plus a side-effect file into figures (lost, duplicated, re-run).

Every processor here appends one line per call to the file named by ``params.log`` *when the call
starts*: ``item_id,attempt,pid,time`` (``O_APPEND``, one ``write``: a ``kill -9`` cannot tear it). A call
that a crash interrupted therefore still shows, and a re-run is a second line for the same item.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from batchyard.core.models import BatchInfo, BatchSpec
from batchyard.core.store import Store

BIN = Path(sys.executable).parent / "batchyard"

PROCESSORS_SOURCE = textwrap.dedent('''
    """Processors of the fault tests (see tests/faults/_faults_support.py)."""
    import os
    import time

    import batchyard
    from batchyard import RetryPolicy

    FAST = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1)


    def _log(item, extra=""):
        line = f"{item.id},{item.attempt},{os.getpid()},{time.time():.6f}{extra}\\n"
        fd = os.open(item.params["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


    @batchyard.processor("side", description="Log the call, sleep params.ms, return who ran it.", retry=FAST)
    def side(item, ctx):
        _log(item)
        time.sleep(float(item.params.get("ms", 0)) / 1000.0)
        return {"pid": os.getpid(), "attempt": item.attempt, "payload": item.payload}


    @batchyard.processor("span", description="Sleep params.ms, then log the call with its start and end.",
                         retry=FAST)
    def span(item, ctx):
        t0 = time.time()
        time.sleep(float(item.params.get("ms", 0)) / 1000.0)
        _log(item, f",{t0:.6f}")
        return {"pid": os.getpid()}


    @batchyard.processor("flaky3", description="Fails attempts 1 and 2, succeeds on attempt 3.", retry=FAST)
    def flaky3(item, ctx):
        _log(item)
        if item.attempt < 3:
            raise RuntimeError(f"transient failure on attempt {item.attempt}")
        return {"attempt": item.attempt}


    @batchyard.processor("hang", description="Never returns (thread mode, 1 s timeout).", timeout=1.0,
                         retry=RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.1))
    def hang(item, ctx):
        _log(item)
        time.sleep(3600)


    @batchyard.processor("hang-proc", description="Never returns (process mode, 1 s timeout).", mode="process",
                         timeout=1.0, retry=RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.1))
    def hang_proc(item, ctx):
        _log(item)
        time.sleep(3600)


    @batchyard.processor("exit-proc", description="os._exit in its worker process, every time.", mode="process",
                         retry=FAST)
    def exit_proc(item, ctx):
        _log(item)
        os._exit(3)


    @batchyard.processor("poison", description="os._exit (the whole worker) on payload 'poison', else like side.",
                         retry=FAST)
    def poison(item, ctx):
        _log(item)
        if item.payload == "poison":
            os._exit(3)
        time.sleep(float(item.params.get("ms", 0)) / 1000.0)
        return {"pid": os.getpid()}


    @batchyard.processor("rated", description="20 starts a second across every worker.", rate_limit="20/s",
                         retry=FAST)
    def rated(item, ctx):
        _log(item)
        time.sleep(float(item.params.get("ms", 0)) / 1000.0)
        return {"pid": os.getpid()}
''')


def write_processors(directory: Path) -> Path:
    path = directory / "fault_processors.py"
    path.write_text(PROCESSORS_SOURCE)
    return path


def submit(store: Store, processor: str, payloads: Iterable[Any], *, parallel: int = 8, max_attempts: int = 3,
           **params: Any) -> BatchInfo:
    """A started batch, created straight in the store (the test process loads no processors)."""
    spec = BatchSpec(processor=processor, params=params, parallel=parallel, max_attempts=max_attempts)
    return store.create_batch(spec, ((None, p) for p in payloads))


class Worker:
    """A ``batchyard worker`` subprocess; its output goes to a log file, shown when a test fails."""

    def __init__(self, store_url: str, procs: Path, log: Path, *, concurrency: int = 8, lease: float = 3.0,
                 grace: float = 10.0, failpoint: str | None = None, extra: tuple[str, ...] = ()) -> None:
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("BATCHYARD_FAILPOINT", None)
        if failpoint:
            env["BATCHYARD_FAILPOINT"] = failpoint
        with open(log, "ab") as fh:
            self.p = subprocess.Popen(
                [str(BIN), "worker", "--store", store_url, "--processors", str(procs), "--concurrency",
                 str(concurrency), "--lease-seconds", str(lease), "--grace", str(grace), "--log-level", "warning",
                 *extra], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        self.pid = self.p.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.p.wait(10)

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.pid} still running after {timeout}s:\n{self.output()}") from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go (test clean-up; never fails)."""
        if self.p.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def done(info: BatchInfo) -> int:
    return info.items_succeeded + info.items_failed + info.items_cancelled


@dataclass
class Call:
    item_id: str
    attempt: int
    pid: int
    at: float
    started: float | None = None  # ``span`` lines: when the call began (``at`` is when it ended)


def read_calls(log: Path) -> list[Call]:
    calls = []
    if log.exists():
        for line in log.read_text().splitlines():
            f = line.split(",")
            calls.append(Call(f[0], int(f[1]), int(f[2]), float(f[3]), float(f[4]) if len(f) > 4 else None))
    return calls


@dataclass
class Figures:
    """What a fault test found: the Jepsen queue checker's lost / duplicated / unexpected, plus re-runs."""

    results: int = 0
    lost: list[str] = field(default_factory=list)          # items with no final result
    duplicated: list[str] = field(default_factory=list)    # items with more than one result
    unexpected: list[str] = field(default_factory=list)    # results for items never submitted
    reruns: dict[str, int] = field(default_factory=dict)   # item -> extra calls
    bad_reruns: list[str] = field(default_factory=list)    # re-runs whose earlier call was not in a crashed process

    def summary(self) -> str:
        return (f"{self.results} results, {len(self.lost)} lost, {len(self.duplicated)} duplicated, "
                f"{len(self.unexpected)} unexpected, {sum(self.reruns.values())} re-runs of {len(self.reruns)} items")


def check_exactly_once(store: Store, batch_id: str, n: int, log: Path, crashed: set[int]) -> Figures:
    """Every item has one succeeded result, recorded by the last call made for it; every earlier call of an
    item was made by a process that crashed (it was in flight, or done but not committed, at the crash)."""
    fig = Figures()
    items = list(store.iter_items(batch_id))
    fig.results = len(items)
    seen: dict[str, int] = {}
    for it in items:
        seen[it.item_id] = seen.get(it.item_id, 0) + 1
    expected = {str(i) for i in range(1, n + 1)}
    fig.lost = sorted(expected - {it.item_id for it in items if it.status.value == "succeeded"}, key=int)
    fig.duplicated = sorted((k for k, c in seen.items() if c > 1), key=int)
    fig.unexpected = sorted(set(seen) - expected)
    by_item: dict[str, list[Call]] = {}
    for c in read_calls(log):
        by_item.setdefault(c.item_id, []).append(c)
    for it in items:
        calls = by_item.get(it.item_id, [])
        assert calls, f"item {it.item_id} succeeded without a call of its processor"
        assert it.result is not None and it.result["pid"] == calls[-1].pid, \
            f"item {it.item_id}: the result is not from its last call ({it.result} vs {calls[-1]})"
        if len(calls) > 1:
            fig.reruns[it.item_id] = len(calls) - 1
            if any(c.pid not in crashed for c in calls[:-1]):
                fig.bad_reruns.append(it.item_id)
        assert [c.attempt for c in calls] == sorted({c.attempt for c in calls}), \
            f"item {it.item_id}: attempts do not increase: {calls}"
    info = store.get_batch(batch_id)
    assert info.status == "completed", info
    assert (info.items_total, info.items_succeeded, info.items_pending, info.items_running) == (n, n, 0, 0), info
    return fig


def assert_counters_match(store: Store, batch_id: str) -> BatchInfo:
    """The batch's O(1) counters agree with its items (nothing half-committed)."""
    info = store.get_batch(batch_id)
    st: dict[str, int] = {}
    for it in store.iter_items(batch_id):
        st[it.status.value] = st.get(it.status.value, 0) + 1
    assert (info.items_pending, info.items_running, info.items_succeeded, info.items_failed,
            info.items_cancelled) == (st.get("pending", 0), st.get("running", 0), st.get("succeeded", 0),
                                      st.get("failed", 0), st.get("cancelled", 0)), (info, st)
    return info


def report(request: Any, line: str) -> None:
    """Print a test's figures (``pytest -rA`` or ``-s`` shows them) and keep them for the summary."""
    print(f"\nFIGURES {request.node.name}: {line}")
    request.node.user_properties.append(("figures", line))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve(Worker):
    """A ``batchyard serve`` subprocess with an embedded worker, ready when ``/api/v1/health`` answers."""

    def __init__(self, store_url: str, procs: Path, log: Path, *, workers: int = 8, lease: float = 3.0,
                 grace: float = 10.0, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "BATCHYARD_LEASE_SECONDS": str(lease),
                    "BATCHYARD_GRACE_SECONDS": str(grace), **(env or {})}
        full_env.pop("BATCHYARD_FAILPOINT", None)
        with open(log, "ab") as fh:
            self.p = subprocess.Popen(
                [str(BIN), "serve", "--port", str(self.port), "--store", store_url, "--processors", str(procs),
                 "--workers", str(workers), "--allow-private-network", "--log-level", "warning"],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
        self.pid = self.p.pid

        def ready() -> bool:
            if self.p.poll() is not None:
                raise AssertionError(f"serve exited with {self.p.returncode}:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code in (200, 503)
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=30, what="the server to answer", interval=0.05)


class Run(Worker):
    """A ``batchyard run`` subprocess."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "TERM": "dumb"}
        env.pop("BATCHYARD_FAILPOINT", None)
        env.pop("BATCHYARD_STORE", None)
        with open(log, "ab") as fh:
            self.p = subprocess.Popen([str(BIN), "run", *args], stdout=fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pid = self.p.pid
