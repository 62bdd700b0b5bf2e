"""Hostile processors: one that fails twice then succeeds, one that never returns (thread and process mode),
one that kills its worker process every time (process mode; in thread mode it takes the whole
worker down: see test_poison.py). Each ends in a final state after its attempts, never loops, and the counts add up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from _faults_support import Worker, read_calls, report, submit, wait_for

from batchyard.core.store import Store
from batchyard.store import open_store

pytestmark = pytest.mark.slow


def run_to_the_end(store_url: str, store: Store, procs: Path, tmp_path: Path, batch_id: str,
                   timeout: float = 60) -> None:
    w = Worker(store_url, procs, tmp_path / "worker.log", concurrency=4)
    try:
        wait_for(lambda: store.get_batch(batch_id).is_final, timeout=timeout, what="the batch to finish")
    finally:
        w.stop()
    assert w.p.returncode == 0, w.output()


@pytest.mark.timeout(90)
def test_fails_twice_then_succeeds_on_attempt_3(store_url: str, store: Store, procs: Path, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    n = 20
    log = tmp_path / "calls.log"
    b = submit(store, "flaky3", range(n), parallel=4, max_attempts=3, log=str(log))
    run_to_the_end(store_url, store, procs, tmp_path, b.batch_id)
    info = store.get_batch(b.batch_id)
    assert (info.status, info.items_succeeded, info.items_failed, info.attempts_total) == ("completed", n, 0, 3 * n)
    for it in store.iter_items(b.batch_id):
        assert it.attempts == 3 and it.result == {"attempt": 3}, it
        assert [e.attempt for e in it.errors] == [1, 2] and all("transient" in e.message for e in it.errors)
    calls = read_calls(log)
    assert sorted((c.item_id, c.attempt) for c in calls) == sorted((str(i), a) for i in range(1, n + 1)
                                                                   for a in (1, 2, 3))
    report(request, f"{n} items: each failed twice and succeeded on attempt 3; {len(calls)} calls, "
                    f"{info.attempts_total} attempts counted, 0 failed")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "batchyard.db")


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    s = open_store(sqlite_url)
    yield s
    s.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("processor", ["hang", "hang-proc"])
def test_a_processor_that_never_returns_is_abandoned_within_its_timeout(
        sqlite_url: str, sqlite_store: Store, procs: Path, tmp_path: Path, processor: str,
        request: pytest.FixtureRequest) -> None:
    """Timeout 1 s, 2 attempts: every attempt ends within timeout + 1 s of its start; a process-mode one's
    process is killed, not left running."""
    store, n, timeout = sqlite_store, 3, 1.0
    log = tmp_path / "calls.log"
    b = submit(store, processor, range(n), parallel=4, max_attempts=2, log=str(log))
    run_to_the_end(sqlite_url, store, procs, tmp_path, b.batch_id)
    info = store.get_batch(b.batch_id)
    assert (info.items_failed, info.items_succeeded, info.attempts_total) == (n, 0, 2 * n), info
    for it in store.iter_items(b.batch_id):
        assert it.attempts == 2 and [e.type for e in it.errors] == ["TimeoutError", "TimeoutError"], it.errors
        assert it.duration_s is not None and it.duration_s <= timeout + 1, f"abandoned after {it.duration_s}s"
    calls = read_calls(log)
    assert len(calls) == 2 * n, calls  # one call per attempt: nothing ran again behind the worker's back
    gone = ""
    if processor == "hang-proc":
        alive = [c.pid for c in calls if psutil.pid_exists(c.pid)
                 and psutil.Process(c.pid).status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"processes of timed-out items still running: {alive}"
        gone = f"; {len({c.pid for c in calls})} child processes killed"
    worst = max(it.duration_s or 0 for it in store.iter_items(b.batch_id))
    report(request, f"{processor}: {n} items failed after 2 attempts of at most {worst:.2f}s (timeout 1 s){gone}")


@pytest.mark.timeout(120)
def test_a_processor_that_kills_its_process_fails_after_its_attempts(
        sqlite_url: str, sqlite_store: Store, procs: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store, n = sqlite_store, 3
    log = tmp_path / "calls.log"
    b = submit(store, "exit-proc", range(n), parallel=4, max_attempts=3, log=str(log))
    run_to_the_end(sqlite_url, store, procs, tmp_path, b.batch_id, timeout=90)
    info = store.get_batch(b.batch_id)
    assert (info.items_failed, info.attempts_total) == (n, 3 * n), info
    for it in store.iter_items(b.batch_id):
        assert it.attempts == 3 and len(it.errors) == 3, it
        assert all("worker process died (exit code 3)" in e.message for e in it.errors), it.errors
    calls = read_calls(log)
    assert sorted((c.item_id, c.attempt) for c in calls) == sorted((str(i), a) for i in range(1, n + 1)
                                                                   for a in (1, 2, 3)), "a loop, or a lost call"
    report(request, f"process mode, os._exit every time: {n} items failed after 3 attempts each, "
                    f"{len(calls)} calls, no loop")
