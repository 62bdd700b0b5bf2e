"""Shared resources per batch through real workers: set up once whatever the workers, handed to every item,
used and torn down once; a failing setup fails the items it held, and a later one succeeds."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import batchyard
from batchyard.core.models import BatchInfo, BatchSpec, NewItem
from batchyard.core.processor import Context, Item, Processor
from batchyard.core.resources import Resource, ResourceContext
from batchyard.core.retry import RetryPolicy
from batchyard.core.worker import Worker
from batchyard.store.sqlite import SQLiteStore


class Session(Resource):
    """Counts its setups and teardowns; a setup takes a while, so that workers overlap it."""

    capacity = 1000.0

    def __init__(self, fail_first: int = 0) -> None:
        self.setups = 0
        self.teardowns: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def setup(self, ctx: ResourceContext) -> dict[str, Any]:
        with self.lock:
            self.setups += 1
            n = self.setups
        time.sleep(0.3)
        if n <= self.fail_first:
            raise ConnectionError(f"the service is down (setup {n})")
        assert ctx.batch is not None and ctx.batch.batch_id == ctx.batch_id
        return {"session": f"s-{ctx.batch_id}", "setup": n, "items": ctx.batch.items_total}

    def teardown(self, state: dict[str, Any], ctx: ResourceContext) -> None:
        with self.lock:
            self.teardowns.append(state)


def make_processor(resource: Session, seen: list[Any], mode: str = "thread", delay: float = 0.0) -> Processor:
    def run(item: Item, ctx: Context) -> dict[str, Any]:
        time.sleep(delay)
        seen.append(ctx.resource)
        ctx.use_resource(10)
        return {"session": ctx.resource["session"]}

    async def arun(item: Item, ctx: Context) -> dict[str, Any]:
        return run(item, ctx)

    return batchyard.processor("with-session", resource=resource, mode=mode,  # type: ignore[arg-type]
                               retry=RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1))(
        arun if mode == "async" else run)


def wait_final(store: SQLiteStore, batch_id: str, timeout: float = 20) -> BatchInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = store.get_batch(batch_id)
        if info.is_final:
            return info
        assert time.monotonic() < deadline, f"{batch_id} not final: {info.status}"
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["thread", "async"])
def test_two_workers_set_the_resource_up_once_and_tear_it_down_once(tmp_path: Path, mode: str) -> None:
    resource, seen = Session(), []
    proc = make_processor(resource, seen, mode)
    store = SQLiteStore(tmp_path / "r.db")
    info = store.create_batch(BatchSpec(processor=proc.name, parallel=8), [NewItem(payload=i) for i in range(40)])
    workers = [Worker(store, [proc], concurrency=4, name=f"w{n}") for n in range(2)]
    for w in workers:
        w.start()
    try:
        done = wait_final(store, info.batch_id)
        deadline = time.monotonic() + 10
        while not resource.teardowns and time.monotonic() < deadline:  # torn down as the batch ends
            time.sleep(0.05)
    finally:
        for w in workers:
            w.stop()
    assert done.status == "completed" and done.items_succeeded == 40
    assert resource.setups == 1
    state = {"session": f"s-{info.batch_id}", "setup": 1, "items": 40}
    assert seen == [state] * 40
    assert resource.teardowns == [state]
    got = store.get_batch(info.batch_id).resource
    assert got is not None and (got.status, got.capacity, got.used, got.utilization_percent) == \
        ("closed", 1000.0, 400.0, 40.0)
    assert {i.result["session"] for i in store.iter_items(info.batch_id)} == {state["session"]}


def test_a_resumed_batch_reuses_the_stored_resource(tmp_path: Path) -> None:
    resource, seen = Session(), []
    proc = make_processor(resource, seen, delay=0.1)
    store = SQLiteStore(tmp_path / "r.db")
    info = store.create_batch(BatchSpec(processor=proc.name), [NewItem(payload=i) for i in range(12)])
    w = Worker(store, [proc], concurrency=1)
    w.start()
    try:
        deadline = time.monotonic() + 10
        while store.get_batch(info.batch_id).items_succeeded < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        w.stop_now()
    assert not store.get_batch(info.batch_id).is_final
    # another worker, as after a restart: the resource stored with the batch is what it uses
    w2 = Worker(store, [proc], concurrency=2)
    w2.start()
    try:
        assert wait_final(store, info.batch_id).items_succeeded == 12
    finally:
        w2.stop()
    assert resource.setups == 1 and len(resource.teardowns) == 1


def test_a_failing_setup_fails_the_items_it_held_and_the_next_setup_runs_them(tmp_path: Path) -> None:
    resource, seen = Session(fail_first=1), []
    proc = make_processor(resource, seen)
    store = SQLiteStore(tmp_path / "r.db")
    info = store.create_batch(BatchSpec(processor=proc.name, parallel=2), [NewItem(payload=i) for i in range(4)])
    w = Worker(store, [proc], concurrency=2)
    w.start()
    try:
        done = wait_final(store, info.batch_id)
    finally:
        w.stop()
    assert done.status == "completed" and done.items_succeeded == 4
    assert resource.setups == 2
    failed_once = [i for i in store.iter_items(info.batch_id) if i.errors]
    assert failed_once, "the items held during the failed setup failed an attempt"
    err = failed_once[0].errors[0]
    assert err.type == "ResourceUnavailable"
    assert "the batch's resource (Session) could not be set up: ConnectionError: the service is down" in err.message


def test_a_sample_sets_the_resource_up_and_the_run_reuses_it(tmp_path: Path) -> None:
    from batchyard.core.engine import Engine

    resource, seen = Session(), []
    proc = make_processor(resource, seen)
    engine = Engine(SQLiteStore(tmp_path / "r.db"))
    est = engine.estimate(BatchSpec(processor=proc.name), [NewItem(payload=i) for i in range(8)], sample=3, seed=1)
    assert est.sample is not None and est.sample.succeeded == 3 and resource.setups == 1
    kept = engine.status(est.batch_id).resource
    assert kept is not None and (kept.status, kept.used) == ("ready", 30.0)
    engine.start(est.batch_id)
    done = engine.run(est.batch_id)
    assert done.status == "completed" and done.items_succeeded == 8
    assert resource.setups == 1 and len(resource.teardowns) == 1
    assert len(seen) == 8
