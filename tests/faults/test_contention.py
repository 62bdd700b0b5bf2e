"""Contention: many claimers on one database. Eight connections race for one item, a thousand times:
exactly one wins each time. Worker processes, each with threads, share a batch: every item runs once,
and no two runs of an item overlap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _faults_support import Worker, read_calls, report, submit, wait_for

from batchyard.core.models import BatchSpec
from batchyard.core.processor import get
from batchyard.core.store import OK, Outcome, Store
from batchyard.store import open_store

pytestmark = pytest.mark.slow

RACERS, ROUNDS = 8, 1000


@pytest.fixture
def racers(store_url: str) -> Iterator[list[Store]]:
    """One store handle per racer: its own connections, as another process or machine would have."""
    handles = [open_store(store_url) for _ in range(RACERS)]
    yield handles
    for h in handles:
        h.close()


@pytest.mark.timeout(240)
def test_eight_connections_race_for_one_item_a_thousand_times(store: Store, racers: list[Store],
                                                              request: pytest.FixtureRequest) -> None:
    procs = {"noop": get("noop")}
    workers = [h.register_worker(f"racer-{i}", ["noop"], 8) for i, h in enumerate(racers)]
    barrier = threading.Barrier(RACERS + 1)
    batch_id = ""
    won: list[list[tuple[int, int]]] = [[] for _ in range(RACERS)]  # (batch pk, item) per claim won
    errors: list[BaseException] = []

    def race(i: int) -> None:
        h, pk = racers[i], workers[i]
        for _ in range(ROUNDS):
            barrier.wait()  # the batch of this round exists: go
            try:
                res = h.claim(pk, procs, 8, {}, {batch_id})
                for batch_pk, items in res.items.items():
                    won[i].extend((batch_pk, c[0]) for c in items)
                    # The winner records at once, so that the batch completes and leaves the runnable set.
                    now = int(time.time() * 1e6)
                    h.record(pk, [Outcome(batch_pk, c[0], OK, {}, None, now, now, None, None) for c in items])
            except BaseException as exc:
                errors.append(exc)
            barrier.wait()  # the round is over

    threads = [threading.Thread(target=race, args=(i,), daemon=True) for i in range(RACERS)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    ids: list[str] = []
    for _ in range(ROUNDS):
        batch_id = store.create_batch(BatchSpec(processor="noop"), [(None, 1)]).batch_id
        ids.append(batch_id)
        barrier.wait()
        barrier.wait()
        assert not errors, errors
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - t0

    winners = [claimed for w in won for claimed in w]
    assert len(winners) == ROUNDS and len(set(winners)) == ROUNDS, \
        f"{len(winners)} claims won over {ROUNDS} rounds of one item ({len(set(winners))} distinct items)"
    for batch_id in ids[:: ROUNDS // 20]:  # a sample: the winner's record made each batch complete
        info = store.get_batch(batch_id)
        assert (info.status, info.items_succeeded, info.attempts_total) == ("completed", 1, 1), info
    spread = sorted((len(w) for w in won), reverse=True)
    report(request, f"{ROUNDS} rounds x {RACERS} connections: {ROUNDS} winners, 0 double claims; "
                    f"wins per racer {spread}; {elapsed:.1f}s")


@pytest.mark.timeout(120)
def test_worker_processes_with_threads_run_each_item_once(store_url: str, store: Store, procs: Path,
                                                          tmp_path: Path, request: pytest.FixtureRequest) -> None:
    n, processes, threads = 3000, 3, 8
    log = tmp_path / "calls.log"
    b = submit(store, "span", range(n), parallel=processes * threads, log=str(log), ms=2)
    workers = [Worker(store_url, procs, tmp_path / f"w{i}.log", concurrency=threads) for i in range(processes)]
    try:
        wait_for(lambda: store.get_batch(b.batch_id).is_final, timeout=90, what="the batch to finish")
    finally:
        for w in workers:
            w.stop()
    assert all(w.p.returncode == 0 for w in workers), [w.output() for w in workers]
    info = store.get_batch(b.batch_id)
    assert (info.items_succeeded, info.attempts_total) == (n, n), info
    calls = read_calls(log)
    per_item: dict[str, list[tuple[float, float]]] = {}
    for c in calls:
        assert c.started is not None
        per_item.setdefault(c.item_id, []).append((c.started, c.at))
    twice = {k: v for k, v in per_item.items() if len(v) > 1}
    assert len(per_item) == n and not twice, f"{len(twice)} items ran more than once: {list(twice.items())[:5]}"
    by_pid: dict[int, int] = {}
    for c in calls:
        by_pid[c.pid] = by_pid.get(c.pid, 0) + 1
    assert len(by_pid) == processes, f"not every worker got items: {by_pid}"
    report(request, f"{processes} processes x {threads} threads, {n} items: {len(calls)} runs, 0 repeated, "
                    f"0 overlapping; items per process {sorted(by_pid.values(), reverse=True)}")
