"""The worker, end to end through Engine.run on a real SQLite store."""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.core.engine import Engine
from batchyard.core.errors import PermanentError
from batchyard.core.models import BatchInfo, BatchSpec, NewItem
from batchyard.core.processor import Context, Item, processor
from batchyard.core.retry import RetryPolicy
from batchyard.store.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "worker.db")
    yield s
    s.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def submit(engine: Engine, name: str, n: int, **spec: Any) -> BatchInfo:
    return engine.submit(BatchSpec(processor=name, **spec), [NewItem(payload={"n": i}) for i in range(n)])


def test_every_item_runs_exactly_once(db: SQLiteStore) -> None:
    name = unique("count")
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    @processor(name)
    def count(item: Item, ctx: Context) -> dict[str, int]:
        with lock:
            calls[item.id] += 1
        return {"sq": item.payload["n"] ** 2}

    engine = Engine(db)
    n = 300
    b = submit(engine, name, n, parallel=8)
    done = engine.run(b.batch_id, interval=0.05)
    assert done.status == "completed"
    assert (done.items_succeeded, done.items_failed, done.items_pending, done.items_running) == (n, 0, 0, 0)
    assert done.attempts_total == n
    assert len(calls) == n and set(calls.values()) == {1}
    items = list(db.iter_items(b.batch_id))
    assert all(i.status == "succeeded" and i.attempts == 1 for i in items)
    assert [i.result for i in items] == [{"sq": i * i} for i in range(n)]
    assert db.list_workers() == []  # the worker unregistered


def test_flaky_processor_succeeds_on_third_attempt(db: SQLiteStore) -> None:
    name = unique("flaky")
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    @processor(name, retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05))
    def flaky(item: Item, ctx: Context) -> dict[str, int]:
        with lock:
            calls[item.id] += 1
            n = calls[item.id]
        if n <= 2:
            raise ConnectionError(f"transient {n}")
        return {"attempt": item.attempt}

    engine = Engine(db)
    b = submit(engine, name, 5, parallel=5)
    done = engine.run(b.batch_id, interval=0.05)
    assert done.status == "completed" and done.items_succeeded == 5 and done.attempts_total == 15
    for item in db.iter_items(b.batch_id):
        assert item.status == "succeeded" and item.attempts == 3
        assert item.result == {"attempt": 3}
        assert [e.message for e in item.errors] == ["transient 1", "transient 2"]
        assert all(e.type == "ConnectionError" for e in item.errors)
    assert set(calls.values()) == {3}


def test_thread_timeout_fails_after_its_attempts(db: SQLiteStore) -> None:
    name = unique("stuck")

    @processor(name, timeout=0.2, retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02))
    def stuck(item: Item, ctx: Context) -> None:
        time.sleep(2)

    engine = Engine(db)
    b = submit(engine, name, 2, parallel=2)
    t = time.perf_counter()
    done = engine.run(b.batch_id, interval=0.05, grace=0.1)
    assert time.perf_counter() - t < 3.5  # timed out, not waited out (2 attempts x 2 s)
    assert done.status == "completed" and done.items_failed == 2 and done.items_succeeded == 0
    for item in db.iter_items(b.batch_id):
        assert item.status == "failed" and item.attempts == 2
        assert item.error is not None and item.error.type == "TimeoutError" and "0.2" in item.error.message
        assert len(item.errors) == 2


def test_permanent_errors_fail_items_without_stopping_the_batch(db: SQLiteStore) -> None:
    name = unique("picky")

    @processor(name, retry=RetryPolicy(max_attempts=5, base_delay=0.01))
    def picky(item: Item, ctx: Context) -> dict[str, int]:
        if item.payload["n"] % 3 == 0:
            raise PermanentError("multiple of three")
        return {"n": item.payload["n"]}

    engine = Engine(db)
    b = submit(engine, name, 12, parallel=4)
    done = engine.run(b.batch_id, interval=0.05)
    assert done.status == "completed" and done.items_failed == 4 and done.items_succeeded == 8
    failed = list(db.iter_items(b.batch_id, status="failed"))
    assert [i.seq for i in failed] == [1, 4, 7, 10]
    assert all(i.attempts == 1 and i.error is not None and i.error.message == "multiple of three" for i in failed)


def test_unencodable_result_fails_the_item(db: SQLiteStore) -> None:
    @processor(unique("unencodable"))
    def unencodable(item: Item, ctx: Context) -> Any:
        return {"thing": object()}

    engine = Engine(db)
    bad = submit(engine, unencodable.name, 2, parallel=2)
    out = engine.run(bad.batch_id, interval=0.05)
    assert out.status == "completed" and out.items_failed == 2
    item = db.get_item(bad.batch_id, "1")
    assert item.error is not None and "serialis" in item.error.message


def test_async_processor(db: SQLiteStore) -> None:
    name = unique("aio")
    active = 0
    peak = 0
    seen: list[str] = []

    @processor(name)
    async def aio(item: Item, ctx: Context) -> dict[str, Any]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        seen.append(item.id)
        return {"id": item.id, "key": ctx.idempotency_key}

    assert aio.mode == "async"
    engine = Engine(db)
    b = submit(engine, name, 40, parallel=10)
    done = engine.run(b.batch_id, interval=0.05)
    assert done.status == "completed" and done.items_succeeded == 40
    assert sorted(seen, key=int) == [str(i) for i in range(1, 41)]
    assert 2 <= peak <= 10  # ran concurrently, within the batch's parallel
    assert db.get_item(b.batch_id, "7").result == {"id": "7", "key": f"{b.batch_id}:7"}


def test_process_mode_from_a_file(db: SQLiteStore, tmp_path: Path) -> None:
    name = unique("proc")
    f = tmp_path / "procmode.py"
    f.write_text(textwrap.dedent(f"""
        import os
        from batchyard import processor, PermanentError

        @processor({name!r}, mode="process")
        def square(item, ctx):
            if item.payload["n"] < 0:
                raise PermanentError("negative")
            return {{"sq": item.payload["n"] ** 2, "pid": os.getpid()}}
    """))
    engine = Engine(db, [str(f)])
    assert engine.processor(name).mode == "process"
    b = engine.submit(BatchSpec(processor=name, parallel=2),
                      [NewItem(payload={"n": n}) for n in [*range(6), -1]])
    done = engine.run(b.batch_id, interval=0.05, grace=5)
    assert done.status == "completed" and done.items_succeeded == 6 and done.items_failed == 1
    results = [i.result for i in db.iter_items(b.batch_id, status="succeeded")]
    assert [r["sq"] for r in results] == [n * n for n in range(6)]
    import os

    assert all(r["pid"] != os.getpid() for r in results)  # ran in child processes
    neg = db.get_item(b.batch_id, "7")
    assert neg.status == "failed" and neg.attempts == 1 and neg.error is not None and neg.error.message == "negative"


def test_stop_and_resume_loses_nothing(db: SQLiteStore) -> None:
    name = unique("slowish")
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    @processor(name)
    def slowish(item: Item, ctx: Context) -> dict[str, str]:
        time.sleep(0.01)
        with lock:
            calls[item.id] += 1
        return {"id": item.id}

    engine = Engine(db)
    n = 200
    b = submit(engine, name, n, parallel=4)
    first = engine.run(b.batch_id, interval=0.02, should_stop=lambda: sum(calls.values()) >= 20, grace=2)
    assert first.status == "running"
    assert first.items_running == 0  # buffered items were released, in-flight ones finished
    assert 20 <= first.items_succeeded < n
    assert first.items_pending == n - first.items_succeeded
    assert db.list_workers() == []
    done = engine.run(b.batch_id, interval=0.05)
    assert done.status == "completed" and done.items_succeeded == n
    assert len(calls) == n and set(calls.values()) == {1}
    assert all(i.attempts == 1 for i in db.iter_items(b.batch_id))  # released items were not counted


def test_pause_from_another_handle_stops_claiming(db: SQLiteStore, tmp_path: Path) -> None:
    name = unique("pausable")
    ran: list[str] = []

    @processor(name)
    def pausable(item: Item, ctx: Context) -> None:
        time.sleep(0.01)
        ran.append(item.id)

    engine = Engine(db)
    b = submit(engine, name, 150, parallel=2)
    other = SQLiteStore(tmp_path / "worker.db")
    try:
        paused: list[bool] = []

        def pause_soon() -> bool:  # once, from another store handle, while the worker runs
            if len(ran) >= 10 and not paused:
                paused.append(True)
                other.transition(b.batch_id, "pause")
            return False

        result: list[BatchInfo] = []
        t = threading.Thread(target=lambda: result.append(
            engine.run(b.batch_id, interval=0.02, should_stop=lambda: pause_soon() or len(result) > 0)))
        t.start()
        deadline = time.time() + 10
        while time.time() < deadline:
            info = other.get_batch(b.batch_id)
            if info.status == "paused" and info.items_running == 0:
                break
            time.sleep(0.02)
        info = other.get_batch(b.batch_id)
        assert info.status == "paused" and info.pause_reason == "user"
        assert info.items_running == 0  # the worker handed back what it had not started
        settled = len(ran)
        time.sleep(0.4)
        assert len(ran) == settled  # nothing runs while paused
        other.transition(b.batch_id, "resume")
        t.join(20)
        assert result and result[0].status == "completed" and result[0].items_succeeded == 150
    finally:
        other.close()
