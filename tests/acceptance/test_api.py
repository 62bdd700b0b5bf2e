"""The Python API: ``batchyard.run`` / ``arun`` with built-in, decorated and file processors; control functions."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from _support import wait_for

import batchyard

SEEN_KEYS: list[tuple[str, str, str]] = []


@batchyard.processor("acceptance-double", description="Double a number.")
def double(item: batchyard.Item, ctx: batchyard.Context) -> dict:
    SEEN_KEYS.append((ctx.batch_id, item.id, ctx.idempotency_key))
    return {"double": item.payload * 2}


@batchyard.processor("acceptance-async-double")
async def async_double(item: batchyard.Item, ctx: batchyard.Context) -> dict:
    await asyncio.sleep(0.01)
    return {"double": item.payload * 2}


@batchyard.processor("acceptance-slow")
def slow(item: batchyard.Item, ctx: batchyard.Context) -> dict:
    time.sleep(0.03)
    return {"n": item.payload}


def done(info: batchyard.BatchInfo) -> int:
    return info.items_succeeded + info.items_failed + info.items_cancelled


def test_run_builtin_and_iterate_results(store_path: Path) -> None:
    batch = batchyard.run(["a", "b", "c"], "noop", store=str(store_path))

    assert isinstance(batch, batchyard.Batch)
    assert batch.id.startswith("batch_")
    items = list(batch)
    assert [it.payload for it in items] == ["a", "b", "c"]
    assert all(it.status == "succeeded" and it.attempts == 1 for it in items)
    info = batch.status()
    assert info.status == "completed"
    assert info.items_succeeded == info.items_total == 3
    assert batchyard.status(batch.id, store=str(store_path)).status == "completed"
    # the batch is in the same store the CLI reads
    assert batchyard.batch(batch.id, store=str(store_path)).status().items_total == 3


def test_decorated_processor_with_progress_callback(store_path: Path) -> None:
    calls: list[batchyard.BatchInfo] = []
    assert isinstance(double, batchyard.Processor)

    batch = batchyard.run(range(40), double, parallel=4, store=str(store_path), on_progress=calls.append)

    results = list(batch.results())
    assert [it.result for it in results] == [{"double": 2 * i} for i in range(40)]
    assert calls, "the progress callback was never called"
    assert all(c.batch_id == batch.id for c in calls)
    assert calls[-1].status == "completed" and done(calls[-1]) == 40
    assert [done(c) for c in calls] == sorted(done(c) for c in calls)  # progress never goes back
    keys = {(b, i, k) for b, i, k in SEEN_KEYS if b == batch.id}
    assert len(keys) == 40
    assert all(k == f"{b}:{i}" for b, i, k in keys)


def test_params_and_failures(store_path: Path, procs_file: Path) -> None:
    batch = batchyard.run(range(1, 7), "fail-even", processors=[str(procs_file)], store=str(store_path))
    info = batch.status()
    assert (info.status, info.items_succeeded, info.items_failed) == ("completed", 3, 3)
    failed = list(batch.results(status="failed"))
    assert [it.payload for it in failed] == [2, 4, 6]
    assert all(it.error is not None and it.error.type == "PermanentError" for it in failed)

    slept = batchyard.run(["x"], "sleep", params={"ms": 1}, store=str(store_path))
    assert next(iter(slept)).result == {"slept_ms": 1}


def test_unknown_processor_and_batch(store_path: Path) -> None:
    with pytest.raises(batchyard.ProcessorNotFound):
        batchyard.run([1], "no-such-processor", store=str(store_path))
    with pytest.raises(batchyard.NotFound):
        batchyard.status("batch_nope", store=str(store_path))


def test_arun_does_not_block_the_event_loop(store_path: Path) -> None:
    async def main() -> tuple[batchyard.Batch, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        batch = await batchyard.arun(range(30), async_double, parallel=4, store=str(store_path))
        stop.set()
        await task
        return batch, ticks

    batch, ticks = asyncio.run(main())
    assert [it.result for it in batch] == [{"double": 2 * i} for i in range(30)]
    assert batch.status().status == "completed"
    assert ticks > 3, "the caller's event loop was blocked while the batch ran"


def test_pause_resume_cancel_functions(store_path: Path) -> None:
    store = str(store_path)
    ids: list[str] = []
    returned: list[batchyard.Batch] = []

    def on_progress(info: batchyard.BatchInfo) -> None:
        if not ids:
            ids.append(info.batch_id)

    worker = threading.Thread(target=lambda: returned.append(
        batchyard.run(range(400), slow, parallel=2, store=store, on_progress=on_progress)), daemon=True)
    worker.start()
    try:
        batch_id = wait_for(lambda: ids and ids[0], timeout=10, what="the batch id")
        wait_for(lambda: done(batchyard.status(batch_id, store=store)) >= 4, timeout=10, what="progress")

        paused = batchyard.pause(batch_id, store=store)
        assert paused.status == "paused" and paused.pause_reason == "user"
        wait_for(lambda: batchyard.status(batch_id, store=store).items_running == 0, timeout=2.5,
                 what="in-flight items to finish")
        frozen = done(batchyard.status(batch_id, store=store))
        time.sleep(0.7)
        assert done(batchyard.status(batch_id, store=store)) == frozen
        with pytest.raises(batchyard.InvalidTransition):
            batchyard.pause(batch_id, store=store)

        assert batchyard.resume(batch_id, store=store).status == "running"
        wait_for(lambda: done(batchyard.status(batch_id, store=store)) > frozen, timeout=10,
                 what="progress after resume")

        assert batchyard.cancel(batch_id, store=store).status in ("cancelling", "cancelled")
        worker.join(15)
        assert not worker.is_alive(), "run() did not return after cancel"
        final = returned[0].status()
        assert final.status == "cancelled"
        assert final.items_cancelled > 0 and final.items_pending == final.items_running == 0
        assert done(final) == 400
    finally:
        if worker.is_alive() and ids:
            batchyard.cancel(ids[0], store=store)
