"""Graceful stop: the first SIGTERM stops claiming at once, lets in-flight items commit within the grace
period, releases the rest and exits 0 (``batchyard run``: 130, it was interrupted); a second signal leaves
at once, and the leases it left behind are recovered by the next worker.

Items take ITEM_MS, so a signal sent as soon as every lane has started one finds them all in flight.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _faults_support import (
    Run,
    Serve,
    Worker,
    assert_counters_match,
    check_exactly_once,
    read_calls,
    report,
    submit,
    wait_for,
)

from batchyard.core.store import Store
from batchyard.store import open_store

pytestmark = pytest.mark.slow

ITEM_MS = 2500
N, LANES = 24, 4


def signal_when_all_lanes_busy(proc: Worker, log: Path, sig: int = signal.SIGTERM) -> float:
    """Wait until LANES calls have started, send ``sig``; the time it was sent."""
    wait_for(lambda: len(read_calls(log)) >= LANES or proc.p.poll() is not None, timeout=60,
             what=f"{LANES} items in flight")
    assert proc.p.poll() is None, proc.output()
    sent = time.time()
    proc.signal(sig)
    return sent


def check_graceful(store: Store, batch_id: str, proc: Worker, log: Path, sent: float) -> None:
    """Released at once, in-flight items committed, nothing started after the signal."""
    # The items claimed but not started go back while the in-flight ones still run (they end ITEM_MS
    # after they started, and the signal came right after the last of them started).
    released = wait_for(lambda: store.get_batch(batch_id).items_running == LANES, timeout=ITEM_MS / 1000 * 0.8,
                        what="the buffered items to be released while the in-flight ones run")
    assert released and proc.p.poll() is None, "released only at exit, not at once"
    assert store.get_batch(batch_id).items_succeeded == 0


def check_after_exit(store: Store, batch_id: str, log: Path, sent: float) -> None:
    calls = read_calls(log)
    assert len(calls) == LANES and all(c.at < sent for c in calls), \
        f"items started after the signal: {[c for c in calls if c.at >= sent]}"
    info = assert_counters_match(store, batch_id)
    assert (info.items_succeeded, info.items_running, info.items_pending) == (LANES, 0, N - LANES), info
    assert info.attempts_total == LANES, "a released item kept an attempt it never made"
    assert store.list_workers() == [], "the worker did not unregister"


@pytest.mark.timeout(90)
def test_sigterm_to_a_worker(store_url: str, store: Store, procs: Path, tmp_path: Path,
                             request: pytest.FixtureRequest) -> None:
    log = tmp_path / "calls.log"
    b = submit(store, "side", range(N), parallel=LANES, log=str(log), ms=ITEM_MS)
    w = Worker(store_url, procs, tmp_path / "worker.log", concurrency=LANES, grace=10)
    sent = signal_when_all_lanes_busy(w, log)
    check_graceful(store, b.batch_id, w, log, sent)
    assert w.wait(ITEM_MS / 1000 + 10) == 0, w.output()
    took = time.time() - sent
    check_after_exit(store, b.batch_id, log, sent)
    report(request, f"worker: exit 0 {took:.1f}s after SIGTERM, {LANES} in-flight committed, "
                    f"{N - LANES} released, none started after the signal")


@pytest.mark.timeout(90)
def test_items_longer_than_the_grace_period_are_released(store_url: str, store: Store, procs: Path, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    log = tmp_path / "calls.log"
    b = submit(store, "side", range(N), parallel=LANES, log=str(log), ms=60_000)
    w = Worker(store_url, procs, tmp_path / "worker.log", concurrency=LANES, grace=1)
    sent = signal_when_all_lanes_busy(w, log)
    assert w.wait(15) == 0, w.output()
    took = time.time() - sent
    assert took < 10, f"exit {took:.1f}s after SIGTERM with a 1 s grace period"
    info = assert_counters_match(store, b.batch_id)
    assert (info.items_running, info.items_pending, info.items_succeeded) == (0, N, 0), info
    assert store.list_workers() == []
    report(request, f"grace 1 s, items of 60 s: exit 0 {took:.1f}s after SIGTERM, all {N} items pending again")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "batchyard.db")


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    s = open_store(sqlite_url)
    yield s
    s.close()


@pytest.mark.timeout(90)
def test_sigterm_to_serve_stops_claims_at_the_signal(sqlite_url: str, sqlite_store: Store, procs: Path,
                                                     tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """uvicorn stops the app (and with it the embedded worker) only once its connections are done, up to its
    graceful-shutdown timeout: a request still uploading held that up, and lanes went on starting items."""
    store = sqlite_store
    n, ms = 200, 400
    log = tmp_path / "calls.log"
    s = Serve(sqlite_url, procs, tmp_path / "serve.log", workers=LANES, grace=10)
    b = submit(store, "side", range(n), parallel=LANES, log=str(log), ms=ms)
    uploading = threading.Event()

    def slow_upload() -> Iterator[bytes]:
        yield b'{"processor": "noop", "items": ['
        uploading.set()
        for _ in range(200):
            time.sleep(0.05)
            yield b"1, "
        yield b"1]}"

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{s.url}/api/v1/batches", content=slow_upload(), timeout=30,
                       headers={"content-type": "application/json"})

    threading.Thread(target=upload, daemon=True).start()
    wait_for(lambda: uploading.is_set() and len(read_calls(log)) >= 2 * LANES, timeout=30,
             what="a request in progress and items running")
    sent = time.time()
    s.signal(signal.SIGTERM)
    assert s.wait(ms / 1000 + 15) == 0, s.output()
    took = time.time() - sent
    calls = read_calls(log)
    # A call that began just after the signal may have begun before the server took the signal in.
    late = [c for c in calls if c.at > sent + 0.3]
    assert not late, f"{len(late)} items started up to {max(c.at for c in late) - sent:.2f}s after the signal"
    info = assert_counters_match(store, b.batch_id)
    assert info.items_running == 0 and store.list_workers() == []
    # every item that started was let finish and committed; nothing else was counted
    assert info.items_succeeded == len(calls) == info.attempts_total, (info, len(calls))
    report(request, f"serve: exit 0 {took:.1f}s after SIGTERM with a request still uploading; {len(calls)} "
                    f"started and committed, none started after the signal, {n - len(calls)} left pending")


@pytest.mark.timeout(90)
def test_sigterm_to_run_exits_130(sqlite_url: str, sqlite_store: Store, procs: Path, tmp_path: Path) -> None:
    store = sqlite_store
    log = tmp_path / "calls.log"
    src = tmp_path / "items.txt"
    src.write_text("".join(f"{i}\n" for i in range(N)))
    r = Run([str(src), "--processor", "side", "--processors", str(procs), "--params-json",
             json.dumps({"log": str(log), "ms": ITEM_MS}), "--parallel", str(LANES), "--store", sqlite_url],
            tmp_path / "run.log")
    sent = signal_when_all_lanes_busy(r, log)
    [b] = store.list_batches()
    check_graceful(store, b.batch_id, r, log, sent)
    assert r.wait(ITEM_MS / 1000 + 10) == 130, r.output()
    check_after_exit(store, b.batch_id, log, sent)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["worker", "serve"])
def test_a_second_signal_leaves_at_once_and_leases_recover(sqlite_url: str, sqlite_store: Store, procs: Path,
                                                           tmp_path: Path, kind: str,
                                                           request: pytest.FixtureRequest) -> None:
    store = sqlite_store
    n = 8
    log = tmp_path / "calls.log"
    if kind == "worker":
        first: Worker = Worker(sqlite_url, procs, tmp_path / "first.log", concurrency=LANES, grace=30)
        b = submit(store, "side", range(n), parallel=LANES, log=str(log), ms=ITEM_MS)
    else:
        first = Serve(sqlite_url, procs, tmp_path / "first.log", workers=LANES, grace=30)
        b = submit(store, "side", range(n), parallel=LANES, log=str(log), ms=ITEM_MS)
    signal_when_all_lanes_busy(first, log)
    time.sleep(0.3)  # the first signal has been taken in: the second is a second one
    second = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 130, first.output()
    took = time.monotonic() - second
    assert took < ITEM_MS / 1000, f"the second signal waited {took:.1f}s for in-flight items"
    left = store.get_batch(b.batch_id)
    assert left.items_running > 0 and left.items_succeeded == 0, "no lease left behind: the test is moot"

    again = Worker(sqlite_url, procs, tmp_path / "again.log", concurrency=LANES)
    try:
        wait_for(lambda: store.get_batch(b.batch_id).is_final, timeout=60, what="the batch to finish")
    finally:
        again.stop()
    fig = check_exactly_once(store, b.batch_id, n, log, crashed={first.pid})
    assert not (fig.lost or fig.duplicated or fig.unexpected or fig.bad_reruns), fig.summary()
    report(request, f"{kind}: second SIGTERM exit 130 in {took:.2f}s; next worker: {fig.summary()}")
