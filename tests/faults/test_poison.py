"""A poison item: a thread-mode processor that kills its whole worker process (os._exit here; a crash in native
code or the OOM killer in life). Restarted each time, the worker must fail that item after its attempts and the
lost-worker grace, and nothing else: the items claimed with it, over and over, all succeed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _faults_support import Worker, read_calls, report, submit

from batchyard.core import defaults
from batchyard.core.store import Store

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_a_poison_item_that_kills_the_worker_fails_and_spares_the_others(
        store_url: str, store: Store, procs: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Thread mode: os._exit takes the whole worker down. A supervisor restarts it each time; after the
    item's attempts and the lost-worker grace, the item fails as WorkerLost, and the other items (claimed with
    it, over and over) all succeed."""
    n, max_attempts = 40, 3
    log = tmp_path / "calls.log"
    payloads = [str(i) for i in range(n)]
    payloads[5] = "poison"
    b = submit(store, "poison", payloads, parallel=4, max_attempts=max_attempts, log=str(log), ms=20)
    limit = max_attempts + defaults.LOST_ATTEMPTS_GRACE
    restarts = 0
    while not store.get_batch(b.batch_id).is_final:
        assert restarts <= limit + 1, f"still looping after {restarts} restarts"
        w = Worker(store_url, procs, tmp_path / f"w{restarts}.log", concurrency=4)
        deadline = time.monotonic() + 60
        while w.p.poll() is None and not store.get_batch(b.batch_id).is_final and time.monotonic() < deadline:
            time.sleep(0.05)
        if w.p.poll() is None:
            w.stop()
        else:
            assert w.p.returncode == 3, w.output()
            restarts += 1
    info = store.get_batch(b.batch_id)
    poison = store.get_item(b.batch_id, "6")
    assert poison.status.value == "failed" and poison.error and poison.error.type == "WorkerLost", poison
    assert (info.items_failed, info.items_succeeded) == (1, n - 1), \
        f"{info.items_failed - 1} innocent items failed with the poison one: {info}"
    poison_calls = [c for c in read_calls(log) if c.item_id == "6"]
    assert len(poison_calls) == restarts <= limit, (len(poison_calls), restarts)
    report(request, f"poison item killed its worker {restarts} times, then failed as WorkerLost; "
                    f"{n - 1} other items succeeded, 0 failed with it")
