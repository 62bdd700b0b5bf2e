"""A rate limit holds across workers: "20/s" over two worker processes, 100 items, never more than 20 starts
in any one second, measured from the start times the processor recorded (not from sleeps)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _faults_support import Worker, read_calls, report, submit, wait_for

from batchyard.core.store import Store

pytestmark = pytest.mark.slow


def most_in_any_window(times: list[float], width: float) -> tuple[int, float]:
    """The most of ``times`` in any half-open window [t, t + width), and where that window starts."""
    times = sorted(times)
    best, at, j = 0, 0.0, 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + width:
            j += 1
        if j - i > best:
            best, at = j - i, t
    return best, at


def test_window_counting() -> None:
    assert most_in_any_window([0.0, 0.5, 0.99, 1.0, 1.5], 1.0) == (3, 0.0)
    assert most_in_any_window([0.0, 1.0, 2.0], 1.0) == (1, 0.0)


@pytest.mark.timeout(120)
def test_twenty_a_second_across_two_workers(store_url: str, store: Store, procs: Path, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:
    n, rate = 100, 20
    log = tmp_path / "calls.log"
    workers = [Worker(store_url, procs, tmp_path / f"w{i}.log", concurrency=8) for i in range(2)]
    try:
        b = submit(store, "rated", range(n), parallel=16, log=str(log), ms=5)
        wait_for(lambda: store.get_batch(b.batch_id).is_final, timeout=90, what="the batch to finish")
    finally:
        for w in workers:
            w.stop()
    calls = read_calls(log)
    assert len(calls) == n and store.get_batch(b.batch_id).items_succeeded == n
    assert len({c.pid for c in calls}) == 2, "one worker ran everything: the limit was not shared"
    starts = [c.at for c in calls]
    worst, at = most_in_any_window(starts, 1.0)
    span = max(starts) - min(starts)
    assert worst <= rate, f"{worst} starts in the second from {at - min(starts):.2f}s (limit {rate}/s)"
    report(request, f"{n} items, 2 workers: at most {worst} starts in any 1 s window (limit {rate}), "
                    f"{n / span:.1f} starts/s overall over {span:.1f}s")
