"""Crash anywhere: a worker dies at each step of an item's life (failpoints), and at random moments
(``kill -9``, 20 times over a 10,000-item batch); restarting finishes the batch with every item recorded
exactly once, and a processor runs again only for items in flight at a crash.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from _faults_support import (
    Worker,
    assert_counters_match,
    check_exactly_once,
    done,
    read_calls,
    report,
    submit,
    wait_for,
)

from batchyard.core import failpoints
from batchyard.core.store import Store

pytestmark = pytest.mark.slow


def test_failpoint_spec_is_checked() -> None:
    assert failpoints._parse("") is None
    assert failpoints._parse("mid_commit") == ("mid_commit", 1)
    assert failpoints._parse("after_claim:3") == ("after_claim", 3)
    with pytest.raises(ValueError, match="expected one of"):
        failpoints._parse("after_lunch")
    with pytest.raises(ValueError, match="counts from 1"):
        failpoints._parse("after_commit:0")
    assert failpoints.ARMED is None  # the test process runs unarmed: hit() is a no-op
    failpoints.hit("after_commit")


# (failpoint, what must hold right after the crash, before the restart)
STEPS = ["after_claim:2", "after_processor:40", "mid_commit:3", "after_commit:3"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("failpoint", STEPS)
def test_a_crash_at_each_step_loses_nothing_and_records_once(store_url: str, store: Store, procs: Path,
                                                              tmp_path: Path, failpoint: str,
                                                              request: pytest.FixtureRequest) -> None:
    n = 300
    log = tmp_path / "calls.log"
    b = submit(store, "side", range(n), parallel=4, log=str(log), ms=4)

    w = Worker(store_url, procs, tmp_path / "worker1.log", concurrency=4, failpoint=failpoint)
    assert w.wait(60) == failpoints.EXIT_CODE, w.output()
    assert f"failpoint {failpoint.split(':')[0]} hit" in w.output()

    # Nothing half-done: the counters agree with the items whatever step the crash hit.
    at_crash = assert_counters_match(store, b.batch_id)
    committed = {it.item_id for it in store.iter_items(b.batch_id, status="succeeded")}
    calls = read_calls(log)
    step = failpoint.split(":")[0]
    assert at_crash.items_running > 0, "the crash left no lease to recover: the test is moot"
    if step == "after_claim":  # the second claim crashed before any of its items started
        assert len(calls) == len({c.item_id for c in calls}) and len(committed) <= len(calls)
    if step == "mid_commit":  # the third group commit never happened: two did
        assert 0 < len(committed) < len(calls)
    if step == "after_commit":  # the third returned: what it wrote stays
        assert len(committed) > 0

    w2 = Worker(store_url, procs, tmp_path / "worker2.log", concurrency=4)
    try:
        wait_for(lambda: store.get_batch(b.batch_id).is_final, timeout=60, what="the batch to finish")
    finally:
        w2.stop()
    assert w2.p.returncode == 0, w2.output()

    fig = check_exactly_once(store, b.batch_id, n, log, crashed={w.pid})
    assert not (fig.lost or fig.duplicated or fig.unexpected), fig.summary()
    assert not fig.bad_reruns, f"re-run though no crash interrupted them: {fig.bad_reruns}"
    assert not set(fig.reruns) & committed, "an item committed before the crash ran again"
    if step == "after_processor":  # the 40th call's outcome was lost with the process: it runs again
        assert fig.reruns, "the call that hit the failpoint was not run again"
    report(request, f"crash at {failpoint}: {fig.summary()}")


@pytest.mark.timeout(300)
def test_kill_9_twenty_times_over_10000_items(store_url: str, store: Store, procs: Path, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    """SIGKILL a worker at random moments, restart it each time: 10,000 results, none lost, none doubled."""
    n, kills_wanted, concurrency = 10_000, 20, 8
    rng = random.Random(request.node.name)  # reproducible moments per test id
    log = tmp_path / "calls.log"
    # ~1,600 items/s at most: twenty lives of a fraction of a second each leave most of the batch for the last
    b = submit(store, "side", range(n), parallel=concurrency, log=str(log), ms=5)
    killed: set[int] = set()
    moments: list[str] = []
    t0 = time.monotonic()
    while len(killed) < kills_wanted:
        before = done(store.get_batch(b.batch_id))
        w = Worker(store_url, procs, tmp_path / f"worker{len(killed)}.log", concurrency=concurrency)
        if rng.random() < 0.2:  # sometimes during start-up: registering, reaping, the first claim
            delay = rng.uniform(0.0, 0.6)
            time.sleep(delay)
            moments.append(f"{delay:.2f}s after start")
        else:  # mostly while items run and commit: a random moment after this worker's first commit
            wait_for(lambda w=w, before=before: done(store.get_batch(b.batch_id)) > before or w.p.poll() is not None,
                     timeout=30, what="the worker's first commit")
            delay = rng.uniform(0.0, 0.2)
            time.sleep(delay)
            moments.append(f"{delay:.2f}s into work")
        assert w.p.poll() is None, f"the worker exited by itself:\n{w.output()}"
        w.kill9()
        killed.add(w.pid)
        assert not store.get_batch(b.batch_id).is_final, "the batch finished before the 20 kills: make it longer"
    progress_at_last_kill = done(store.get_batch(b.batch_id))
    last = Worker(store_url, procs, tmp_path / "worker-last.log", concurrency=concurrency)
    try:
        wait_for(lambda: store.get_batch(b.batch_id).is_final, timeout=120, what="the batch to finish")
    finally:
        last.stop()
    assert last.p.returncode == 0, last.output()
    elapsed = time.monotonic() - t0

    fig = check_exactly_once(store, b.batch_id, n, log, crashed=killed)
    assert fig.results == n and not (fig.lost or fig.duplicated or fig.unexpected), fig.summary()
    assert not fig.bad_reruns, f"re-run though no kill interrupted them: {fig.bad_reruns[:20]}"
    # A kill can only lose what was in flight or waiting for its group commit: a bounded few per kill.
    assert sum(fig.reruns.values()) <= kills_wanted * 400, fig.summary()
    report(request, f"{len(killed)} kills survived ({progress_at_last_kill} of {n} items done at the last), "
                    f"{fig.summary()}, {elapsed:.0f}s")
