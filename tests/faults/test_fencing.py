"""Fencing: a worker frozen past its lease (``SIGSTOP``) loses its items to another worker; when it wakes
(``SIGCONT``) its late outcome is refused by the lease token (the worker pk the store fences records by),
and the item's result is the other worker's, recorded once.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from _faults_support import Worker, read_calls, report, submit, wait_for

from batchyard.core.store import Store

pytestmark = pytest.mark.slow

LEASE = 1.5


@pytest.mark.timeout(90)
def test_a_worker_stopped_past_its_lease_cannot_record_late(store_url: str, store: Store, procs: Path,
                                                           tmp_path: Path, request: pytest.FixtureRequest) -> None:
    log = tmp_path / "calls.log"
    b = submit(store, "side", ["only"], parallel=1, log=str(log), ms=2000)
    a = Worker(store_url, procs, tmp_path / "a.log", concurrency=1, lease=LEASE)
    others: list[Worker] = []
    try:
        wait_for(lambda: read_calls(log), timeout=30, what="worker A to start the item")
        a.signal(signal.SIGSTOP)
        stopped = time.monotonic()

        # B reaps A once A's heartbeat is older than the lease, claims the item and starts it.
        bw = Worker(store_url, procs, tmp_path / "b.log", concurrency=1, lease=LEASE)
        others.append(bw)
        wait_for(lambda: len(read_calls(log)) == 2, timeout=30, what="worker B to start the item")
        assert time.monotonic() - stopped > LEASE, "B took the item before A's lease ran out"

        # A wakes while B still runs the item: the item is running, under B's lease. A's call returns at
        # once (its sleep ran out while it was frozen) and A tries to record it: only the token refuses it.
        a.signal(signal.SIGCONT)
        wait_for(lambda: "refused" in a.output() or "lost its lease" in a.output(), timeout=20,
                 what="worker A to find out it lost its lease")
        during = store.get_item(b.batch_id, "1")
        assert during.status.value == "running" and during.result is None, during
        assert a.p.poll() is None, f"worker A died instead of starting afresh:\n{a.output()}"

        wait_for(lambda: store.get_batch(b.batch_id).is_final, timeout=30, what="worker B to finish the item")
        item = store.get_item(b.batch_id, "1")
        assert item.status.value == "succeeded" and item.result and item.result["pid"] == bw.pid, item
        assert [c.pid for c in read_calls(log)] == [a.pid, bw.pid]
        assert item.attempts == 2, item
        info = store.get_batch(b.batch_id)
        assert (info.items_succeeded, info.items_running, info.attempts_total) == (1, 0, 2), info
        assert store.processor_stats()["side"].succeeded == 1, "the late outcome was counted in the statistics"

        # A starts afresh under a new identity and works normally.
        c = submit(store, "side", range(20), parallel=2, log=str(tmp_path / "more.log"), ms=1)
        wait_for(lambda: store.get_batch(c.batch_id).is_final, timeout=30, what="a later batch to finish")
        assert store.get_batch(c.batch_id).items_succeeded == 20
        how = "refused at its group commit" if "refused" in a.output() else "dropped at its next heartbeat"
    finally:
        a.signal(signal.SIGCONT)
        a.stop()
        for w in others:
            w.stop()
    assert a.p.returncode == 0, a.output()
    report(request, f"A frozen past its {LEASE}s lease; A's late outcome, while B ran the item, {how}; "
                    "B's result recorded once, 2 attempts")
