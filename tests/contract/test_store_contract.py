"""The Store contract: one suite every store implementation must pass.

``StoreContract`` is not collected by itself. A store subclasses it and provides:

* a ``store`` fixture: a fresh, empty store;
* a ``reopen`` fixture: a callable returning another handle on the same database (another process or
  machine would hold one);
* ``set_schema_version(store, version)``: write the stored schema version behind the store's back.

The PostgreSQL store will inherit this class unchanged, like ``TestSQLiteStore`` at the bottom.
"""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from batchyard.core import defaults
from batchyard.core.errors import BatchyardError, IdempotencyConflict, InvalidTransition, NotFound, SchemaVersionError
from batchyard.core.limits import RateLimit
from batchyard.core.models import BatchInfo, BatchSpec, FailurePolicy, Idempotency, NewItem, Priority
from batchyard.core.processor import Processor, get
from batchyard.core.scheduling import Held
from batchyard.core.store import FAIL, OK, RETRY, Claimed, ClaimResult, Outcome, Store
from batchyard.store.sqlite import SQLiteStore

NOOP = get("noop")
PROCS: dict[str, Any] = {"noop": NOOP}


def _fn(item: Any, ctx: Any) -> Any:
    return None


# -- helpers ------------------------------------------------------------------------------------


def new_batch(store: Store, n: int = 5, *, start: bool = True, keys: bool = False, **spec: Any) -> BatchInfo:
    spec.setdefault("processor", "noop")
    items = [NewItem(key=f"k{i}" if keys else None, payload={"i": i}) for i in range(1, n + 1)]
    return store.create_batch(BatchSpec(**spec), items, start=start)


def claim(store: Store, worker: int, capacity: int = 8, *, procs: dict[str, Any] | None = None,
          held: dict[int, Held] | None = None, only: set[str] | None = None) -> ClaimResult:
    return store.claim(worker, PROCS if procs is None else procs, capacity, held or {}, only)


def pk_of(res: ClaimResult, batch_id: str) -> int:
    for pk, rt in res.batches.items():
        if rt.batch_id == batch_id:
            return pk
    raise AssertionError(f"batch {batch_id} not in claim result {res}")


def items_of(res: ClaimResult, batch_id: str) -> list[Claimed]:
    """Claimed items of one batch (stores may return plain tuples in Claimed's field order)."""
    for pk, rt in res.batches.items():
        if rt.batch_id == batch_id:
            return [Claimed._make(c) for c in res.items.get(pk, [])]
    return []


def claim_batch(store: Store, worker: int, info: BatchInfo, capacity: int = 8) -> tuple[int, list[Claimed]]:
    res = claim(store, worker, capacity, only={info.batch_id})
    return pk_of(res, info.batch_id), items_of(res, info.batch_id)


def err(message: str = "boom", attempt: int = 1) -> dict[str, Any]:
    return {"type": "RuntimeError", "message": message, "traceback": "Traceback ...", "attempt": attempt,
            "at": time.time()}


def us(t: float) -> int:
    """Outcome times are microseconds since the epoch."""
    return int(t * 1_000_000)


def ok(pk: int, c: Claimed, result: Any = None, cost: float | None = None) -> Outcome:
    now = time.time()
    return Outcome(pk, c.rowid, OK, result if result is not None else {"ok": c.seq}, None, us(now - 0.01), us(now),
                   cost, None)


def fail(pk: int, c: Claimed, message: str = "boom") -> Outcome:
    now = time.time()
    return Outcome(pk, c.rowid, FAIL, None, err(message, c.attempts), us(now - 0.01), us(now), None, None)


def retry(pk: int, c: Claimed, not_before: float | None = None, message: str = "try again") -> Outcome:
    """``not_before`` in seconds since the epoch, like time.time()."""
    now = time.time()
    return Outcome(pk, c.rowid, RETRY, None, err(message, c.attempts), us(now - 0.01), us(now), None,
                   us(now if not_before is None else not_before))


def counts(store: Store, batch_id: str) -> tuple[int, int, int, int, int, int]:
    b = store.get_batch(batch_id)
    return (b.items_total, b.items_pending, b.items_running, b.items_succeeded, b.items_failed,
            b.items_cancelled)


def statuses(store: Store, batch_id: str) -> list[str]:
    return [i.status.value for i in store.iter_items(batch_id)]


def assert_counters_match_items(store: Store, batch_id: str) -> None:
    """The O(1) counters on the batch agree with the items they count."""
    b = store.get_batch(batch_id)
    st = statuses(store, batch_id)
    assert (b.items_total, b.items_pending, b.items_running, b.items_succeeded, b.items_failed,
            b.items_cancelled) == (len(st), st.count("pending"), st.count("running"), st.count("succeeded"),
                                   st.count("failed"), st.count("cancelled"))


def age_heartbeats() -> None:
    """Let heartbeats age so that ``store.reap(LEASE)`` finds them stale."""
    time.sleep(0.06)


LEASE = 0.03


class StoreContract:
    """Behaviour every Store must have. Subclasses provide the fixtures described in the module doc."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError

    @pytest.fixture
    def reopen(self) -> Callable[[], Store]:
        raise NotImplementedError

    def set_schema_version(self, store: Store, version: int) -> None:
        raise NotImplementedError

    @pytest.fixture
    def worker(self, store: Store) -> int:
        return store.register_worker("test-worker", ["noop"], 8)

    # -- create_batch ---------------------------------------------------------------------------

    def test_create_batch_counters(self, store: Store) -> None:
        b = new_batch(store, 7)
        assert b.status == "running"
        assert (b.items_total, b.items_pending, b.items_running, b.items_succeeded, b.items_failed,
                b.items_cancelled) == (7, 7, 0, 0, 0, 0)
        assert b.attempts_total == 0 and b.cost_total == 0
        assert b.started_at is not None and b.completed_at is None
        assert b.progress_percent == 0
        assert b.batch_id.startswith("batch_")
        again = store.get_batch(b.batch_id)
        assert (again.batch_id, again.status, again.items_total, again.items_pending) == (b.batch_id, "running", 7, 7)

    def test_create_batch_keeps_the_spec(self, store: Store) -> None:
        spec = BatchSpec(processor="noop", params={"x": 1}, parallel=3, priority=Priority.HIGH,
                         failure_policy=FailurePolicy(max_failures=2, max_failure_rate=0.5), max_attempts=5,
                         webhook="https://example.com/hook", description="desc", tags=[" a ", "b", " "],
                         tenant="acme", source="in.csv", fingerprint="fp-1", cost_per_item=0.5, cost_unit="EUR")
        b = store.create_batch(spec, [NewItem(payload=1)])
        got = store.get_batch(b.batch_id)
        assert got.processor == "noop" and got.params == {"x": 1} and got.parallel == 3
        assert got.priority == Priority.HIGH and got.max_attempts == 5
        assert got.failure_policy == FailurePolicy(max_failures=2, max_failure_rate=0.5)
        assert got.webhook is not None and got.webhook.url == "https://example.com/hook" and got.description == "desc"
        assert got.tags == ["a", "b"] and got.tenant == "acme" and got.source == "in.csv"
        assert got.fingerprint == "fp-1" and got.cost_unit == "EUR"

    def test_item_ids_seq_and_payloads(self, store: Store) -> None:
        payloads: list[Any] = [{"a": 1}, [1, 2], "text", 42, None, 1.5, "ünïcødé ✓"]
        b = store.create_batch(BatchSpec(processor="noop"), [NewItem(payload=p) for p in payloads])
        items = list(store.iter_items(b.batch_id))
        assert [i.seq for i in items] == list(range(1, len(payloads) + 1))
        assert [i.item_id for i in items] == [str(s) for s in range(1, len(payloads) + 1)]
        assert [i.payload for i in items] == payloads
        assert all(i.status == "pending" and i.attempts == 0 and i.result is None for i in items)

    def test_item_keys_and_tuple_items(self, store: Store) -> None:
        b = store.create_batch(BatchSpec(processor="noop"), [("upc-1", {"v": 1}), (None, {"v": 2}),
                                                             NewItem(key="upc-3", payload={"v": 3})])
        items = list(store.iter_items(b.batch_id))
        assert [i.item_id for i in items] == ["upc-1", "2", "upc-3"]
        assert [i.seq for i in items] == [1, 2, 3]
        assert [i.payload for i in items] == [{"v": 1}, {"v": 2}, {"v": 3}]

    def test_batches_do_not_share_items(self, store: Store) -> None:
        a = new_batch(store, 3)
        b = new_batch(store, 4)
        assert [i.payload["i"] for i in store.iter_items(a.batch_id)] == [1, 2, 3]
        assert [i.payload["i"] for i in store.iter_items(b.batch_id)] == [1, 2, 3, 4]
        assert [i.seq for i in store.iter_items(b.batch_id)] == [1, 2, 3, 4]

    def test_large_batch_streams_in_chunks(self, store: Store) -> None:
        n = defaults.INSERT_CHUNK * 2 + 7
        b = store.create_batch(BatchSpec(processor="noop"), ((None, i) for i in range(n)))
        assert b.items_total == n and b.items_pending == n
        last = list(store.iter_items(b.batch_id, after_seq=n - 2))
        assert [(i.seq, i.payload) for i in last] == [(n - 1, n - 2), (n, n - 1)]

    def test_empty_batch_completes_at_once(self, store: Store) -> None:
        b = store.create_batch(BatchSpec(processor="noop"), [])
        assert b.status == "completed"
        assert b.items_total == 0 and b.completed_at is not None
        assert b.progress_percent == 100

    def test_start_false_stays_pending_until_started(self, store: Store, worker: int) -> None:
        b = new_batch(store, 3, start=False)
        assert b.status == "pending" and b.started_at is None and b.items_pending == 3
        assert claim(store, worker).items == {}
        started = store.transition(b.batch_id, "start")
        assert started.status == "running" and started.started_at is not None
        assert len(items_of(claim(store, worker), b.batch_id)) == 3

    def test_empty_pending_batch_completes_when_started(self, store: Store) -> None:
        b = store.create_batch(BatchSpec(processor="noop"), [], start=False)
        assert b.status == "pending"
        assert store.transition(b.batch_id, "start").status == "completed"

    def test_failing_item_source_creates_nothing(self, store: Store) -> None:
        def items() -> Iterator[NewItem]:
            yield NewItem(payload=1)
            yield NewItem(payload=2)
            raise ValueError("bad row 3")

        with pytest.raises(ValueError, match="bad row 3"):
            store.create_batch(BatchSpec(processor="noop"), items())
        assert store.list_batches() == []
        b = new_batch(store, 2)  # the half-written items are gone: the next batch starts clean
        assert [i.payload for i in store.iter_items(b.batch_id)] == [{"i": 1}, {"i": 2}]

    # -- reading batches ------------------------------------------------------------------------

    def test_get_batch_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound):
            store.get_batch("batch_nope")

    def test_list_batches_filters(self, store: Store) -> None:
        running = new_batch(store, 2, tags=["red", "blue"])
        pending = new_batch(store, 2, start=False, tags=["blue"])
        other = new_batch(store, 2, processor="other")
        done = store.create_batch(BatchSpec(processor="noop"), [])

        def ids(**kw: Any) -> set[str]:
            return {b.batch_id for b in store.list_batches(**kw)}

        assert ids() == {running.batch_id, pending.batch_id, other.batch_id, done.batch_id}
        assert ids(status="pending") == {pending.batch_id}
        assert ids(status="completed") == {done.batch_id}
        assert ids(status="running") == {running.batch_id, other.batch_id}
        assert ids(processor="other") == {other.batch_id}
        assert ids(processor="noop", status="running") == {running.batch_id}
        assert ids(tag="red") == {running.batch_id}
        assert ids(tag="blue") == {running.batch_id, pending.batch_id}
        assert ids(tag="green") == set()
        assert len(store.list_batches(limit=1)) == 1
        assert len(store.list_batches(limit=3)) == 3

    def test_list_batches_pages_with_before(self, store: Store) -> None:
        made = {new_batch(store, 1).batch_id for _ in range(7)}
        seen: list[str] = []
        before = None
        for _ in range(10):
            page = store.list_batches(limit=3, before=before)
            if not page:
                break
            assert len(page) <= 3
            seen += [b.batch_id for b in page]
            before = page[-1].batch_id
        assert len(seen) == len(set(seen)) == 7
        assert set(seen) == made

    def test_list_batches_newest_first(self, store: Store) -> None:
        made = [new_batch(store, 1).batch_id for _ in range(12)]
        assert [b.batch_id for b in store.list_batches()] == made[::-1]

    def test_list_batches_updated_after(self, store: Store) -> None:
        """Following changes: only batches changed at or after the mark, oldest change first."""
        a = new_batch(store, 1)
        time.sleep(0.01)
        b = new_batch(store, 1, start=False)
        mark = a.updated_at.timestamp() + 0.005  # between a's change and b's
        assert [x.batch_id for x in store.list_batches(updated_after=0)] == [a.batch_id, b.batch_id]
        assert [x.batch_id for x in store.list_batches(updated_after=mark)] == [b.batch_id]
        # inclusive: the mark of a batch's own change finds it (1 µs below absorbs the datetime rounding)
        assert b.batch_id in {x.batch_id for x in store.list_batches(updated_after=b.updated_at.timestamp() - 1e-6)}
        time.sleep(0.01)
        paused = store.transition(a.batch_id, "pause")  # a changes after b now
        assert [x.batch_id for x in store.list_batches(updated_after=mark)] == [b.batch_id, a.batch_id]
        assert store.list_batches(updated_after=paused.updated_at.timestamp() + 0.005) == []
        assert store.list_batches(updated_after=mark, tenant="someone-else") == []
        assert [x.batch_id for x in store.list_batches(updated_after=mark, status="paused")] == [a.batch_id]

    def test_list_batches_updated_after_pages_without_a_gap(self, store: Store) -> None:
        """Paging with the last updated_at seen (inclusive) plus a de-dup set reaches every batch once."""
        made = {new_batch(store, 1, start=i % 2 == 0).batch_id for i in range(7)}
        seen: dict[tuple[str, datetime], None] = {}
        mark = 0.0
        for _ in range(20):
            page = store.list_batches(updated_after=mark, limit=2)
            fresh = [x for x in page if (x.batch_id, x.updated_at) not in seen]
            if not fresh:
                break
            assert [x.updated_at for x in page] == sorted(x.updated_at for x in page)
            seen.update(((x.batch_id, x.updated_at), None) for x in fresh)
            mark = page[-1].updated_at.timestamp() - 1e-6
        assert [i for i, _ in seen] and {i for i, _ in seen} == made and len(seen) == 7

    def test_find_resumable(self, store: Store) -> None:
        assert store.find_resumable("fp") is None
        b = new_batch(store, 2, fingerprint="fp")
        found = store.find_resumable("fp")
        assert found is not None and found.batch_id == b.batch_id
        store.transition(b.batch_id, "cancel")
        assert store.find_resumable("fp") is None

    # -- transitions ----------------------------------------------------------------------------

    def test_pause_and_resume(self, store: Store, worker: int) -> None:
        b = new_batch(store, 4)
        p = store.transition(b.batch_id, "pause")
        assert p.status == "paused" and p.pause_reason == "user"
        assert claim(store, worker).items == {}  # a paused batch hands out nothing
        r = store.transition(b.batch_id, "resume")
        assert r.status == "running" and r.pause_reason is None
        assert len(items_of(claim(store, worker), b.batch_id)) == 4
        p2 = store.transition(b.batch_id, "pause", "budget_reached")
        assert p2.pause_reason == "budget_reached"

    def test_active_seconds_stop_while_paused(self, store: Store) -> None:
        b = new_batch(store, 1)
        time.sleep(0.05)
        paused = store.transition(b.batch_id, "pause")
        assert paused.active_seconds >= 0.04
        time.sleep(0.1)
        assert store.get_batch(b.batch_id).active_seconds == pytest.approx(paused.active_seconds)

    @pytest.mark.parametrize("origin", ["pending", "running", "paused"])
    def test_cancel_cancels_pending_items(self, store: Store, origin: str) -> None:
        b = new_batch(store, 3, start=origin != "pending")
        if origin == "paused":
            store.transition(b.batch_id, "pause")
        c = store.transition(b.batch_id, "cancel")
        assert c.status == "cancelled"  # nothing was leased: cancelling ends at once
        assert counts(store, b.batch_id) == (3, 0, 0, 0, 0, 3)
        assert statuses(store, b.batch_id) == ["cancelled"] * 3
        assert c.completed_at is not None

    def test_cancel_waits_for_leased_items(self, store: Store, worker: int) -> None:
        b = new_batch(store, 10, parallel=1)
        pk, got = claim_batch(store, worker, b, capacity=1)
        assert 1 <= len(got) < 10
        c = store.transition(b.batch_id, "cancel")
        assert c.status == "cancelling"
        assert counts(store, b.batch_id) == (10, 0, len(got), 0, 0, 10 - len(got))
        assert claim(store, worker).items == {}  # a cancelling batch hands out nothing
        res = store.record(worker, [ok(pk, got[0])])
        assert res.accepted == 1  # in-flight work still counts
        if len(got) > 1:
            assert store.get_batch(b.batch_id).status == "cancelling"
            store.record(worker, [ok(pk, x) for x in got[1:]])
        done = store.get_batch(b.batch_id)
        assert done.status == "cancelled"
        assert done.items_succeeded == len(got) and done.items_cancelled == 10 - len(got)
        assert_counters_match_items(store, b.batch_id)

    @pytest.mark.parametrize(("setup", "action"), [
        ("pending", "pause"), ("pending", "resume"), ("pending", "retry"),
        ("running", "start"), ("running", "resume"), ("running", "retry"),
        ("paused", "pause"), ("paused", "start"), ("paused", "retry"),
        ("cancelled", "cancel"), ("cancelled", "start"), ("cancelled", "resume"), ("cancelled", "retry"),
        ("cancelled", "pause"),
        ("completed", "cancel"), ("completed", "pause"), ("completed", "resume"), ("completed", "start"),
        ("cancelling", "cancel"), ("cancelling", "pause"), ("cancelling", "resume"),
    ])
    def test_illegal_transitions_raise(self, store: Store, worker: int, setup: str, action: str) -> None:
        b = self._batch_in(store, worker, setup)
        before = store.get_batch(b.batch_id)
        with pytest.raises(InvalidTransition) as exc:
            store.transition(b.batch_id, action)
        assert exc.value.current == setup and exc.value.action == action
        assert store.get_batch(b.batch_id).status == before.status

    def _batch_in(self, store: Store, worker: int, status: str) -> BatchInfo:
        if status == "completed":
            return store.create_batch(BatchSpec(processor="noop"), [])
        b = new_batch(store, 3, start=status != "pending", parallel=1)
        if status == "paused":
            store.transition(b.batch_id, "pause")
        elif status == "cancelled":
            store.transition(b.batch_id, "cancel")
        elif status == "cancelling":
            claim_batch(store, worker, b, capacity=1)
            store.transition(b.batch_id, "cancel")
        assert store.get_batch(b.batch_id).status == status
        return b

    def test_unknown_action_and_unknown_batch(self, store: Store) -> None:
        b = new_batch(store, 1)
        with pytest.raises((ValueError, BatchyardError)):
            store.transition(b.batch_id, "explode")
        with pytest.raises(NotFound):
            store.transition("batch_nope", "pause")

    @pytest.mark.parametrize("action", ["complete", "fail"])
    def test_internal_actions_are_not_user_transitions(self, store: Store, action: str) -> None:
        b = new_batch(store, 3)
        with pytest.raises((InvalidTransition, ValueError)):
            store.transition(b.batch_id, action)
        assert store.get_batch(b.batch_id).status == "running"

    def test_pause_reason_is_validated(self, store: Store) -> None:
        b = new_batch(store, 1)
        with pytest.raises((ValueError, BatchyardError)):
            store.transition(b.batch_id, "pause", "because")

    def test_retry_reopens_completed_batch(self, store: Store, worker: int) -> None:
        b = new_batch(store, 4, parallel=4)
        pk, got = claim_batch(store, worker, b, capacity=4)
        assert len(got) == 4
        store.record(worker, [ok(pk, got[0]), ok(pk, got[1]), fail(pk, got[2]), fail(pk, got[3])])
        done = store.get_batch(b.batch_id)
        assert done.status == "completed" and done.items_failed == 2 and done.completed_at is not None
        r = store.transition(b.batch_id, "retry")
        assert r.status == "running" and r.completed_at is None
        assert counts(store, b.batch_id) == (4, 2, 0, 2, 0, 0)
        again = {i.seq: i for i in store.iter_items(b.batch_id)}
        assert again[3].status == "pending" and again[3].attempts == 0
        assert again[1].status == "succeeded" and again[1].attempts == 1
        _, got2 = claim_batch(store, worker, b, capacity=4)
        assert sorted(c.seq for c in got2) == [3, 4]
        assert all(c.attempts == 1 for c in got2)
        store.record(worker, [ok(pk, c) for c in got2])
        final = store.get_batch(b.batch_id)
        assert final.status == "completed" and final.items_succeeded == 4 and final.items_failed == 0
        assert_counters_match_items(store, b.batch_id)

    def test_retry_reopens_failed_batch(self, store: Store, worker: int) -> None:
        b = new_batch(store, 2, parallel=2, failure_policy=FailurePolicy(max_failures=0))
        pk, got = claim_batch(store, worker, b, capacity=2)
        store.record(worker, [fail(pk, c) for c in got])
        assert store.get_batch(b.batch_id).status == "failed"
        r = store.transition(b.batch_id, "retry")
        assert r.status == "running" and r.items_pending == 2 and r.items_failed == 0
        assert r.status_reason is None
        _, got2 = claim_batch(store, worker, b, capacity=2)
        store.record(worker, [ok(pk, c) for c in got2])
        assert store.get_batch(b.batch_id).status == "completed"

    def test_retry_without_failures_changes_nothing(self, store: Store, worker: int) -> None:
        b = new_batch(store, 1)
        pk, got = claim_batch(store, worker, b)
        store.record(worker, [ok(pk, got[0])])
        assert store.transition(b.batch_id, "retry").status == "completed"

    # -- claim ----------------------------------------------------------------------------------

    def test_claim_leases_items(self, store: Store, worker: int) -> None:
        b = new_batch(store, 3, params={"ms": 1}, max_attempts=4, cost_per_item=0.25)
        res = claim(store, worker, 8)
        pk = pk_of(res, b.batch_id)
        got = items_of(res, b.batch_id)
        assert [c.seq for c in got] == [1, 2, 3]
        assert [c.payload for c in got] == [{"i": 1}, {"i": 2}, {"i": 3}]  # decoded
        assert all(c.attempts == 1 and c.key is None for c in got)
        assert len({c.rowid for c in got}) == 3
        rt = res.batches[pk]
        assert (rt.batch_id, rt.processor, rt.params, rt.max_attempts, rt.status, rt.cost_per_item) == \
            (b.batch_id, "noop", {"ms": 1}, 4, "running", 0.25)
        assert 3 <= res.grants[pk] <= 8
        after = store.get_batch(b.batch_id)
        assert (after.items_pending, after.items_running, after.attempts_total) == (0, 3, 3)
        assert statuses(store, b.batch_id) == ["running"] * 3
        assert store.batch_states([pk]) == {pk: "running"}
        assert store.batch_states([pk + 1000]) == {}
        assert claim(store, worker, 8, held={pk: Held(in_flight=3)}).items == {}  # nothing is leased twice

    def test_claim_only_known_processors_and_only_filter(self, store: Store, worker: int) -> None:
        other = new_batch(store, 2, processor="other")
        mine = new_batch(store, 2)
        res = claim(store, worker)
        assert items_of(res, other.batch_id) == []
        assert len(items_of(res, mine.batch_id)) == 2
        mine2 = new_batch(store, 2)
        mine3 = new_batch(store, 2)
        res = claim(store, worker, only={mine3.batch_id})
        assert items_of(res, mine2.batch_id) == []
        assert len(items_of(res, mine3.batch_id)) == 2

    def test_claim_keys(self, store: Store, worker: int) -> None:
        b = new_batch(store, 2, keys=True)
        _, got = claim_batch(store, worker, b)
        assert [c.key for c in got] == ["k1", "k2"]

    def test_grants_respect_parallel_across_workers(self, store: Store) -> None:
        b = new_batch(store, 50, parallel=4)
        w1 = store.register_worker("w1", ["noop"], 3)
        w2 = store.register_worker("w2", ["noop"], 3)
        w3 = store.register_worker("w3", ["noop"], 3)
        r1 = claim(store, w1, 3)
        pk = pk_of(r1, b.batch_id)
        assert r1.grants[pk] == 3
        assert len(items_of(r1, b.batch_id)) >= 3
        r2 = claim(store, w2, 3)
        assert r2.grants.get(pk, 0) == 1
        r3 = claim(store, w3, 3)
        assert r3.grants.get(pk, 0) == 0 and items_of(r3, b.batch_id) == []
        store.unregister_worker(w1)  # its slots go back
        r3b = claim(store, w3, 3)
        assert r3b.grants.get(pk, 0) == 3

    def test_processor_concurrency_caps_across_workers(self, store: Store) -> None:
        capped = Processor(name="capped", fn=_fn, concurrency=3)
        procs = {"capped": capped}
        a = new_batch(store, 20, processor="capped", parallel=10)
        b = new_batch(store, 20, processor="capped", parallel=10)
        w1 = store.register_worker("w1", ["capped"], 10)
        w2 = store.register_worker("w2", ["capped"], 10)
        r1 = store.claim(w1, procs, 10, {}, None)
        assert sum(r1.grants.values()) == 3
        r2 = store.claim(w2, procs, 10, {}, None)
        assert sum(r2.grants.values()) == 0
        assert items_of(r2, a.batch_id) == [] and items_of(r2, b.batch_id) == []

    def test_priority_high_before_normal(self, store: Store, worker: int) -> None:
        low = new_batch(store, 20, parallel=4, priority=Priority.LOW)
        normal = new_batch(store, 20, parallel=4)
        high = new_batch(store, 20, parallel=4, priority=Priority.HIGH)
        res = claim(store, worker, 4)
        assert res.grants[pk_of(res, high.batch_id)] == 4
        assert len(items_of(res, high.batch_id)) >= 4
        assert items_of(res, normal.batch_id) == [] and items_of(res, low.batch_id) == []
        other = store.register_worker("other", ["noop"], 8)
        store.unregister_worker(worker)
        res = claim(store, other, 6)  # room beyond the high batch's parallel goes to the next tier
        assert res.grants[pk_of(res, high.batch_id)] == 4
        assert res.grants[pk_of(res, normal.batch_id)] == 2
        assert len(items_of(res, normal.batch_id)) >= 2
        assert items_of(res, low.batch_id) == []

    def test_equal_priority_shares_capacity(self, store: Store, worker: int) -> None:
        a = new_batch(store, 100, parallel=8)
        b = new_batch(store, 3, parallel=8)
        res = claim(store, worker, 4)
        assert res.grants[pk_of(res, a.batch_id)] == 2
        assert res.grants[pk_of(res, b.batch_id)] == 2
        assert len(items_of(res, a.batch_id)) >= 2 and len(items_of(res, b.batch_id)) >= 2

    def test_rate_limit_tokens(self, store: Store) -> None:
        limited = Processor(name="limited", fn=_fn, rate_limit=RateLimit.parse("5/s"))
        procs = {"limited": limited}
        b = new_batch(store, 100, processor="limited", parallel=50)
        w = store.register_worker("w", ["limited"], 50)
        t0 = time.time()
        first = items_of(store.claim(w, procs, 50, {}, None), b.batch_id)
        assert len(first) == int(RateLimit.parse("5/s").burst)  # what a full bucket holds
        res = store.claim(w, procs, 50, {}, None)
        if time.time() - t0 < 0.15:
            assert items_of(res, b.batch_id) == []  # the bucket is empty
        time.sleep(0.45)
        later = items_of(store.claim(w, procs, 50, {}, None), b.batch_id)
        elapsed = time.time() - t0
        assert 1 <= len(later) <= int(5 * elapsed) + 1  # about 5/s refilled
        assert store.get_batch(b.batch_id).items_running == len(first) + len(later)

    def test_rate_limited_batch_does_not_starve_others(self, store: Store) -> None:
        slow = Processor(name="slow", fn=_fn, rate_limit=RateLimit.parse("1/s"))
        procs = {"slow": slow, "noop": NOOP}
        new_batch(store, 50, processor="slow", parallel=4, priority=Priority.HIGH)
        normal = new_batch(store, 50, parallel=4)
        w = store.register_worker("w", ["noop", "slow"], 4)
        store.claim(w, procs, 4, {}, None)
        res = store.claim(w, procs, 4, {}, None)
        assert len(items_of(res, normal.batch_id)) > 0

    def test_retry_not_before_is_respected(self, store: Store, worker: int) -> None:
        b = new_batch(store, 1)
        pk, got = claim_batch(store, worker, b)
        store.record(worker, [retry(pk, got[0], not_before=time.time() + 0.3)])
        item = store.get_item(b.batch_id, "1")
        assert item.status == "pending" and item.not_before is not None
        assert claim_batch(store, worker, b)[1] == []
        time.sleep(0.35)
        _, again = claim_batch(store, worker, b)
        assert [c.attempts for c in again] == [2]

    def test_concurrent_claimers_never_share_an_item(self, store: Store, reopen: Callable[[], Store]) -> None:
        n = 300
        b = new_batch(store, n, parallel=100)
        seen: list[int] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def run() -> None:
            try:
                s = reopen()
                w = s.register_worker("w", ["noop"], 4)
                deadline = time.time() + 20
                while time.time() < deadline:
                    res = s.claim(w, PROCS, 4, {}, {b.batch_id})
                    got = items_of(res, b.batch_id)
                    if not got:
                        if s.get_batch(b.batch_id).is_final:
                            return
                        time.sleep(0.001)
                        continue
                    with lock:
                        seen.extend(c.rowid for c in got)
                    pk = pk_of(res, b.batch_id)
                    assert s.record(w, [ok(pk, c) for c in got]).accepted == len(got)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert len(seen) == n and len(set(seen)) == n
        final = store.get_batch(b.batch_id)
        assert final.status == "completed" and final.items_succeeded == n and final.attempts_total == n

    # -- record ---------------------------------------------------------------------------------

    def test_record_updates_items_and_counters(self, store: Store, worker: int) -> None:
        b = new_batch(store, 5, parallel=2)
        pk, got = claim_batch(store, worker, b, capacity=2)
        assert len(got) >= 3
        a, f, r = got[:3]
        res = store.record(worker, [ok(pk, a, {"answer": 42}, cost=0.5), fail(pk, f, "bad input"),
                                    retry(pk, r, message="flaky")])
        assert (res.accepted, res.refused) == (3, 0)
        _, pending, running, succeeded, failed, cancelled = counts(store, b.batch_id)
        assert (succeeded, failed, cancelled) == (1, 1, 0)
        assert running == len(got) - 3 and pending == 5 - len(got) + 1
        info = store.get_batch(b.batch_id)
        assert info.cost_total == pytest.approx(0.5)
        assert info.attempts_total == len(got)
        assert_counters_match_items(store, b.batch_id)

        ia = store.get_item(b.batch_id, str(a.seq))
        assert ia.status == "succeeded" and ia.result == {"answer": 42} and ia.cost == 0.5
        assert ia.started_at is not None and ia.finished_at is not None
        assert abs(ia.finished_at.timestamp() - time.time()) < 60  # the unit of Outcome times is kept
        assert ia.duration_s == pytest.approx(0.01, abs=0.001)
        assert ia.attempts == 1 and ia.error is None
        iff = store.get_item(b.batch_id, str(f.seq))
        assert iff.status == "failed" and iff.error is not None
        assert iff.error.type == "RuntimeError" and iff.error.message == "bad input"
        assert [e.message for e in iff.errors] == ["bad input"]
        ir = store.get_item(b.batch_id, str(r.seq))
        assert ir.status == "pending" and ir.attempts == 1 and ir.not_before is not None
        assert abs(ir.not_before.timestamp() - time.time()) < 60
        assert ir.error is not None and ir.error.message == "flaky"

    def test_error_history_is_kept(self, store: Store, worker: int) -> None:
        b = new_batch(store, 1, max_attempts=3)
        for attempt in (1, 2):
            pk, got = claim_batch(store, worker, b)
            assert got[0].attempts == attempt
            store.record(worker, [retry(pk, got[0], message=f"try {attempt}")])
        pk, got = claim_batch(store, worker, b)
        store.record(worker, [fail(pk, got[0], "last")])
        item = store.get_item(b.batch_id, "1")
        assert item.status == "failed" and item.attempts == 3
        assert [e.message for e in item.errors] == ["try 1", "try 2", "last"]
        assert item.error is not None and item.error.message == "last"
        assert store.get_batch(b.batch_id).attempts_total == 3

    def test_batch_completes_when_all_items_final(self, store: Store, worker: int) -> None:
        b = new_batch(store, 3, parallel=3)
        pk, got = claim_batch(store, worker, b, capacity=3)
        store.record(worker, [ok(pk, got[0]), fail(pk, got[1])])
        assert store.get_batch(b.batch_id).status == "running"
        store.record(worker, [ok(pk, got[2])])
        done = store.get_batch(b.batch_id)
        assert done.status == "completed" and done.completed_at is not None
        assert (done.items_succeeded, done.items_failed) == (2, 1)
        assert done.progress_percent == 100
        assert done.status_reason is None

    def test_outcome_for_another_workers_item_is_refused(self, store: Store, worker: int) -> None:
        b = new_batch(store, 10, parallel=10)
        pk, mine = claim_batch(store, worker, b, capacity=1)
        other = store.register_worker("other", ["noop"], 1)
        _, theirs = claim_batch(store, other, b, capacity=1)
        assert theirs and not {c.rowid for c in mine} & {c.rowid for c in theirs}
        res = store.record(worker, [ok(pk, mine[0]), ok(pk, theirs[0])])
        assert (res.accepted, res.refused) == (1, 1)
        assert store.get_item(b.batch_id, str(theirs[0].seq)).status == "running"
        assert store.get_item(b.batch_id, str(mine[0].seq)).status == "succeeded"
        assert_counters_match_items(store, b.batch_id)

    def test_fencing_refuses_a_worker_that_lost_its_lease(self, store: Store) -> None:
        b = new_batch(store, 2, parallel=2)
        w1 = store.register_worker("w1", ["noop"], 2)
        pk, old = claim_batch(store, w1, b, capacity=2)
        age_heartbeats()
        w2 = store.register_worker("w2", ["noop"], 2)
        assert store.reap(LEASE).workers == 1  # w1 only: w2's heartbeat is fresh
        assert store.heartbeat(w1, {}) is False
        _, new = claim_batch(store, w2, b, capacity=2)
        assert sorted(c.rowid for c in new) == sorted(c.rowid for c in old)
        assert all(c.attempts == 2 for c in new)
        late = store.record(w1, [ok(pk, c, {"from": "w1"}) for c in old])
        assert (late.accepted, late.refused) == (0, 2)
        assert counts(store, b.batch_id) == (2, 0, 2, 0, 0, 0)
        mine = store.record(w2, [ok(pk, new[0], {"from": "w2"}), fail(pk, new[1])])
        assert (mine.accepted, mine.refused) == (2, 0)
        again = store.record(w2, [ok(pk, new[1], {"from": "w2"})])  # already final
        assert (again.accepted, again.refused) == (0, 1)
        assert [i.result for i in store.iter_items(b.batch_id, status="succeeded")] == [{"from": "w2"}]
        assert_counters_match_items(store, b.batch_id)
        assert store.get_batch(b.batch_id).status == "completed"

    def test_a_reaped_worker_cannot_claim(self, store: Store) -> None:
        """A worker reaped between two heartbeats must not lease items under its dead pk: nobody
        would ever reap them again."""
        b = new_batch(store, 3)
        w = store.register_worker("stalled", ["noop"], 2)
        age_heartbeats()
        assert store.reap(LEASE).workers == 1
        assert items_of(claim(store, w, only={b.batch_id}), b.batch_id) == []
        assert store.get_batch(b.batch_id).items_pending == 3

    def test_fencing_survives_worker_pk_reuse(self, store: Store) -> None:
        b = new_batch(store, 2, parallel=2)
        w1 = store.register_worker("w1", ["noop"], 2)
        pk, old = claim_batch(store, w1, b, capacity=2)
        age_heartbeats()
        assert store.reap(LEASE).workers == 1
        w2 = store.register_worker("w2", ["noop"], 2)  # registers after the reap
        claim_batch(store, w2, b, capacity=2)
        assert store.heartbeat(w1, {}) is False
        late = store.record(w1, [ok(pk, c, {"from": "w1"}) for c in old])
        assert (late.accepted, late.refused) == (0, 2)

    def test_a_final_item_cannot_be_recorded_twice(self, store: Store, worker: int) -> None:
        b = new_batch(store, 2, parallel=2)
        pk, got = claim_batch(store, worker, b, capacity=2)
        assert store.record(worker, [ok(pk, got[0])]).accepted == 1
        again = store.record(worker, [fail(pk, got[0]), ok(pk, got[1])])
        assert (again.accepted, again.refused) == (1, 1)
        assert counts(store, b.batch_id) == (2, 0, 0, 2, 0, 0)

    def test_failure_policy_max_failures(self, store: Store, worker: int) -> None:
        b = new_batch(store, 10, parallel=1, failure_policy=FailurePolicy(max_failures=1))
        pk, got = claim_batch(store, worker, b, capacity=1)
        assert len(got) == 2
        store.record(worker, [fail(pk, got[0])])
        assert store.get_batch(b.batch_id).status == "running"  # 1 failure is allowed
        store.record(worker, [fail(pk, got[1])])
        done = store.get_batch(b.batch_id)
        assert done.status == "failed"
        assert counts(store, b.batch_id) == (10, 0, 0, 0, 2, 8)
        assert done.status_reason is not None and "max_failures" in done.status_reason
        assert claim(store, worker).items == {}
        assert_counters_match_items(store, b.batch_id)

    def test_failure_policy_rate_lets_in_flight_items_finish(self, store: Store, worker: int) -> None:
        b = new_batch(store, 8, parallel=4, failure_policy=FailurePolicy(max_failure_rate=0.25))
        pk, got = claim_batch(store, worker, b, capacity=4)
        assert len(got) == 8
        store.record(worker, [fail(pk, c) for c in got[:2]])  # 2/8 = 25%: not more than the rate
        assert store.get_batch(b.batch_id).status == "running"
        store.record(worker, [fail(pk, got[2])])  # 3/8 > 25%: trips; five items are still leased
        tripped = store.get_batch(b.batch_id)
        assert tripped.status == "running" and tripped.items_running == 5
        assert claim(store, worker, held={pk: Held(in_flight=5)}).items == {}  # a tripped batch hands out nothing
        store.record(worker, [ok(pk, c) for c in got[3:]])
        done = store.get_batch(b.batch_id)
        assert done.status == "failed" and "max_failure_rate" in (done.status_reason or "")
        assert (done.items_succeeded, done.items_failed) == (5, 3)

    def test_failure_policy_trip_cancels_pending(self, store: Store, worker: int) -> None:
        b = new_batch(store, 6, parallel=1, failure_policy=FailurePolicy(max_failures=0))
        pk, got = claim_batch(store, worker, b, capacity=1)
        store.record(worker, [fail(pk, got[0])])
        b2 = store.get_batch(b.batch_id)
        assert b2.items_pending == 0 and b2.items_cancelled == 6 - len(got)
        store.record(worker, [ok(pk, c) for c in got[1:]])
        assert store.get_batch(b.batch_id).status == "failed"

    def test_retry_outcome_after_trip_still_ends_the_batch(self, store: Store, worker: int) -> None:
        b = new_batch(store, 5, parallel=1, failure_policy=FailurePolicy(max_failures=0))
        pk, got = claim_batch(store, worker, b, capacity=1)
        assert len(got) == 2
        store.record(worker, [fail(pk, got[0])])
        store.record(worker, [retry(pk, got[1])])
        done = store.get_batch(b.batch_id)
        assert done.status == "failed"
        assert done.items_pending == 0
        assert_counters_match_items(store, b.batch_id)

    def test_release_after_trip_still_ends_the_batch(self, store: Store, worker: int) -> None:
        b = new_batch(store, 5, parallel=1, failure_policy=FailurePolicy(max_failures=0))
        pk, got = claim_batch(store, worker, b, capacity=1)
        store.record(worker, [fail(pk, got[0])])
        store.release(worker, pk, [got[1].rowid])
        assert store.get_batch(b.batch_id).status == "failed"

    def test_retry_outcome_in_cancelling_batch_cancels_the_item(self, store: Store, worker: int) -> None:
        b = new_batch(store, 5, parallel=1)
        pk, got = claim_batch(store, worker, b, capacity=1)
        store.transition(b.batch_id, "cancel")
        store.record(worker, [retry(pk, c) for c in got])
        done = store.get_batch(b.batch_id)
        assert done.status == "cancelled"
        assert done.items_pending == 0 and done.items_cancelled == 5
        assert "pending" not in statuses(store, b.batch_id)

    # -- release --------------------------------------------------------------------------------

    def test_release_returns_buffered_items(self, store: Store, worker: int) -> None:
        b = new_batch(store, 6, parallel=2)
        pk, got = claim_batch(store, worker, b, capacity=2)
        assert len(got) == 4
        store.release(worker, pk, [c.rowid for c in got[2:]])
        assert counts(store, b.batch_id) == (6, 4, 2, 0, 0, 0)
        assert store.get_batch(b.batch_id).attempts_total == 2
        released = store.get_item(b.batch_id, str(got[2].seq))
        assert released.status == "pending" and released.attempts == 0
        store.release(worker, pk, [])  # nothing to do
        other = store.register_worker("other", ["noop"], 2)
        store.release(other, pk, [got[0].rowid])  # not its item: ignored
        assert store.get_item(b.batch_id, str(got[0].seq)).status == "running"
        _, again = claim_batch(store, worker, b, capacity=2)
        assert got[2].seq in [c.seq for c in again]
        assert next(c for c in again if c.seq == got[2].seq).attempts == 1
        assert_counters_match_items(store, b.batch_id)

    def test_release_in_cancelling_batch_cancels(self, store: Store, worker: int) -> None:
        b = new_batch(store, 6, parallel=2)
        pk, got = claim_batch(store, worker, b, capacity=2)
        store.transition(b.batch_id, "cancel")
        store.release(worker, pk, [c.rowid for c in got])
        done = store.get_batch(b.batch_id)
        assert done.status == "cancelled" and done.items_cancelled == 6 and done.items_running == 0
        assert_counters_match_items(store, b.batch_id)

    # -- workers and reaping --------------------------------------------------------------------

    def test_workers_register_heartbeat_unregister(self, store: Store) -> None:
        w = store.register_worker("alpha", ["noop", "sleep"], 6)
        info = {x.name: x for x in store.list_workers()}["alpha"]
        assert info.processors == ["noop", "sleep"] and info.concurrency == 6
        assert store.heartbeat(w, {"batch_x": 3}) is True
        info = {x.name: x for x in store.list_workers()}["alpha"]
        assert info.running == {"batch_x": 3}
        b = new_batch(store, 3)
        assert len(claim_batch(store, w, b)[1]) == 3
        store.unregister_worker(w)
        assert "alpha" not in {x.name for x in store.list_workers()}
        assert store.heartbeat(w, {}) is False
        back = list(store.iter_items(b.batch_id))
        assert [i.status for i in back] == ["pending"] * 3
        assert [i.attempts for i in back] == [1] * 3  # the interrupted attempt counts
        assert counts(store, b.batch_id) == (3, 3, 0, 0, 0, 0)

    def test_reap_stale_heartbeat(self, store: Store) -> None:
        b = new_batch(store, 4, parallel=4)
        w = store.register_worker("stale", ["noop"], 4)
        assert len(claim_batch(store, w, b, capacity=4)[1]) == 4
        assert store.reap(60).workers == 0  # alive and fresh
        assert store.heartbeat(w, {}) is True
        age_heartbeats()
        assert store.reap(LEASE).workers == 1
        assert store.heartbeat(w, {}) is False
        assert "stale" not in {x.name for x in store.list_workers()}
        back = list(store.iter_items(b.batch_id))
        assert [i.status for i in back] == ["pending"] * 4
        assert [i.attempts for i in back] == [1] * 4
        assert counts(store, b.batch_id) == (4, 4, 0, 0, 0, 0)
        assert store.reap(LEASE).workers == 0

    def test_reap_dead_process(self, store: Store) -> None:
        code = ("import sys; from batchyard.store import open_store; s = open_store(sys.argv[1]); "
                "print(s.register_worker('ghost', ['noop'], 2)); s.close()")
        out = subprocess.run([sys.executable, "-c", code, store.url], capture_output=True, text=True,
                             timeout=60, check=True)
        ghost = int(out.stdout.strip())
        b = new_batch(store, 2, parallel=2)
        _, got = claim_batch(store, ghost, b, capacity=2)
        assert len(got) == 2
        mine = store.register_worker("alive", ["noop"], 2)
        assert store.reap(3600).workers == 1  # the heartbeat is fresh, but the process is gone
        assert store.heartbeat(ghost, {}) is False
        assert store.heartbeat(mine, {}) is True
        assert counts(store, b.batch_id) == (2, 2, 0, 0, 0, 0)
        assert [i.attempts for i in store.iter_items(b.batch_id)] == [1, 1]

    def test_reap_in_cancelling_batch_cancels(self, store: Store) -> None:
        b = new_batch(store, 4, parallel=1)
        w = store.register_worker("w", ["noop"], 1)
        claim_batch(store, w, b, capacity=1)
        store.transition(b.batch_id, "cancel")
        age_heartbeats()
        store.reap(LEASE)
        done = store.get_batch(b.batch_id)
        assert done.status == "cancelled" and done.items_cancelled == 4

    def test_item_lost_too_often_fails(self, store: Store) -> None:
        b = new_batch(store, 1, max_attempts=1)
        limit = 1 + defaults.LOST_ATTEMPTS_GRACE
        for attempt in range(1, limit + 1):
            w = store.register_worker(f"w{attempt}", ["noop"], 1)
            _, got = claim_batch(store, w, b, capacity=1)
            assert [c.attempts for c in got] == [attempt]
            time.sleep(0.02)
            assert store.reap(0.01).workers == 1
        item = store.get_item(b.batch_id, "1")
        assert item.status == "failed" and item.error is not None and item.error.type == "WorkerLost"
        assert store.get_batch(b.batch_id).status == "completed"

    # -- items ----------------------------------------------------------------------------------

    def test_iter_items_order_filters_and_paging(self, store: Store, worker: int) -> None:
        b = new_batch(store, 10, parallel=2)
        _, got = claim_batch(store, worker, b, capacity=2)
        leased = [c.seq for c in got]
        assert [i.seq for i in store.iter_items(b.batch_id)] == list(range(1, 11))
        assert [i.seq for i in store.iter_items(b.batch_id, status="running")] == leased
        assert [i.seq for i in store.iter_items(b.batch_id, status="pending")] == \
            [s for s in range(1, 11) if s not in leased]
        assert list(store.iter_items(b.batch_id, status="failed")) == []
        assert [i.seq for i in store.iter_items(b.batch_id, after_seq=7)] == [8, 9, 10]
        assert [i.seq for i in store.iter_items(b.batch_id, limit=4)] == [1, 2, 3, 4]
        assert [i.seq for i in store.iter_items(b.batch_id, after_seq=3, limit=2)] == [4, 5]
        assert [i.seq for i in store.iter_items(b.batch_id, status="pending", after_seq=8, limit=1)] == [9]
        assert list(store.iter_items(b.batch_id, after_seq=10)) == []
        with pytest.raises(NotFound):
            list(store.iter_items("batch_nope"))

    def test_result_stats_cover_numeric_fields_of_succeeded_items(self, store: Store, worker: int) -> None:
        b = new_batch(store, 4)
        pk, got = claim_batch(store, worker, b)
        store.record(worker, [
            ok(pk, got[0], {"offset": -2.5, "n": 1, "flag": True, "scores": {"conf": 0.5}, "xs": [1, 2]}),
            ok(pk, got[1], {"offset": 1.5, "n": 3, "name": "x", "scores": {"conf": 1.0}}),
            ok(pk, got[2], {"n": 2}),
            fail(pk, got[3]),
        ])
        stats = store.result_stats(b.batch_id)
        assert set(stats) == {"offset", "n", "scores.conf"}  # no booleans, strings or array elements
        assert stats["n"] == {"count": 3, "mean": 2.0, "min": 1, "max": 3, "sum": 6}
        assert stats["offset"]["mean"] == -0.5 and stats["scores.conf"]["max"] == 1.0

    def test_result_stats_name_fields_plainly(self, store: Store, worker: int) -> None:
        b = new_batch(store, 1)
        pk, got = claim_batch(store, worker, b)
        store.record(worker, [ok(pk, got[0], {"offset_seconds": 1.5, "method-results": {"mfcc_conf": 0.5},
                                              'odd"key': 2})])
        assert set(store.result_stats(b.batch_id)) == {"offset_seconds", "method-results.mfcc_conf", 'odd"key'}

    def test_timeline_counts_outcomes_per_bucket_with_gaps_filled(self, store: Store, worker: int) -> None:
        b = new_batch(store, 6)
        pk, got = claim_batch(store, worker, b)
        t0 = (time.time() // 10 + 1) * 10  # a multiple of the bucket: which bucket each item lands in is fixed

        def at(c: Claimed, kind: str, offset: float) -> Outcome:
            error = err() if kind == FAIL else None
            return Outcome(pk, c.rowid, kind, {"ok": 1} if kind == OK else None, error, us(t0 + offset - 0.01),
                           us(t0 + offset), None, None)

        assert store.timeline(b.batch_id, 5) == []  # nothing finished yet
        store.record(worker, [at(got[0], OK, 0.5), at(got[1], OK, 4.9), at(got[2], FAIL, 1),
                              at(got[3], OK, 16), at(got[4], RETRY, 2)])  # a retry is not an outcome yet
        points = store.timeline(b.batch_id, 5)
        assert [(p.at.timestamp(), p.seconds, p.succeeded, p.failed) for p in points] == [
            (t0, 5, 2, 1), (t0 + 5, 5, 0, 0), (t0 + 10, 5, 0, 0), (t0 + 15, 5, 1, 0)]
        auto = store.timeline(b.batch_id)  # a round width for a batch this short: one second
        assert auto[0].seconds == 1 and auto[0].at.timestamp() == t0 and len(auto) == 17
        assert sum(p.succeeded for p in auto) == 3 and sum(p.failed for p in auto) == 1
        with pytest.raises(NotFound):
            store.timeline("batch_nope")

    def test_timeline_has_at_most_its_points_however_spread(self, store: Store, worker: int) -> None:
        b = new_batch(store, 50, parallel=50)
        pk, got = claim_batch(store, worker, b, capacity=50)
        t0 = time.time()
        # Finish times spread over 5 hours (as clocks of other machines could put them): still at most 200
        store.record(worker, [Outcome(pk, c.rowid, OK, {"ok": 1}, None, us(t0 + i * 360), us(t0 + i * 360 + 1),
                                      None, None) for i, c in enumerate(got)])
        for asked in (None, 1.0):
            points = store.timeline(b.batch_id, asked)
            assert 100 <= len(points) <= 200 and sum(p.succeeded for p in points) == 50
            assert all(p.seconds == points[0].seconds for p in points)
            assert [p.at for p in points] == sorted(p.at for p in points)
        hourly = store.timeline(b.batch_id, 3600)  # a width wider than needed is kept
        assert len(hourly) in (5, 6) and {p.seconds for p in hourly} == {3600}

    def test_iter_items_pages_through_large_batches(self, store: Store) -> None:
        b = store.create_batch(BatchSpec(processor="noop"), ((None, i) for i in range(2500)))
        seqs = [i.seq for i in store.iter_items(b.batch_id)]
        assert seqs == list(range(1, 2501))
        assert len(list(store.iter_items(b.batch_id, limit=1500))) == 1500

    def test_get_item_by_key_and_by_seq(self, store: Store) -> None:
        keyed = new_batch(store, 3, keys=True)
        plain = new_batch(store, 3)
        assert store.get_item(keyed.batch_id, "k2").payload == {"i": 2}
        assert store.get_item(keyed.batch_id, "k2").seq == 2
        assert store.get_item(plain.batch_id, "3").payload == {"i": 3}
        assert store.get_item(plain.batch_id, "3").item_id == "3"
        for missing in ("k9", "4", "nope"):
            with pytest.raises(NotFound):
                store.get_item(plain.batch_id, missing)
        with pytest.raises(NotFound):
            store.get_item(plain.batch_id, "k1")  # another batch's key
        with pytest.raises(NotFound):
            store.get_item("batch_nope", "1")

    @pytest.mark.parametrize("item_id", ["0", "00", "²"])
    def test_get_item_never_reads_another_batch(self, store: Store, item_id: str) -> None:
        new_batch(store, 3)
        b = new_batch(store, 3)
        with pytest.raises(NotFound):
            store.get_item(b.batch_id, item_id)

    # -- delete and cleanup ---------------------------------------------------------------------

    def test_delete_batch_only_when_final(self, store: Store, worker: int) -> None:
        b = new_batch(store, 3)
        with pytest.raises(InvalidTransition) as exc:
            store.delete_batch(b.batch_id)
        assert exc.value.action == "delete" and exc.value.current == "running"
        store.transition(b.batch_id, "pause")
        with pytest.raises(InvalidTransition):
            store.delete_batch(b.batch_id)
        keep = new_batch(store, 2)
        store.transition(b.batch_id, "cancel")
        store.delete_batch(b.batch_id)
        with pytest.raises(NotFound):
            store.get_batch(b.batch_id)
        with pytest.raises(NotFound):
            list(store.iter_items(b.batch_id))
        with pytest.raises(NotFound):
            store.delete_batch(b.batch_id)
        assert [i.payload for i in store.iter_items(keep.batch_id)] == [{"i": 1}, {"i": 2}]
        later = new_batch(store, 2)
        assert [i.seq for i in store.iter_items(later.batch_id)] == [1, 2]

    def test_cleanup_removes_old_final_batches(self, store: Store) -> None:
        done = store.create_batch(BatchSpec(processor="noop"), [])
        cancelled = new_batch(store, 2)
        store.transition(cancelled.batch_id, "cancel")
        running = new_batch(store, 2)
        paused = new_batch(store, 2)
        store.transition(paused.batch_id, "pause")
        assert store.cleanup(time.time() - 3600) == []
        removed = store.cleanup(time.time() + 1)
        assert sorted(removed) == sorted([done.batch_id, cancelled.batch_id])
        for gone in removed:
            with pytest.raises(NotFound):
                store.get_batch(gone)
        assert {b.batch_id for b in store.list_batches()} == {running.batch_id, paused.batch_id}
        assert len(list(store.iter_items(running.batch_id))) == 2

    # -- the service: webhook outbox, API keys, statistics, tenants ---------------------------

    def test_reap_counts_items_and_batches(self, store: Store) -> None:
        a, b = new_batch(store, 3, parallel=3), new_batch(store, 2, parallel=2)
        w = store.register_worker("w", ["noop"], 8)
        claim(store, w, 8)
        age_heartbeats()
        assert store.reap(LEASE) == (1, 5, 2)
        assert counts(store, a.batch_id)[1] == 3 and counts(store, b.batch_id)[1] == 2

    def test_final_state_writes_a_webhook_delivery(self, store: Store, worker: int) -> None:
        hooked = new_batch(store, 2, webhook="https://example.com/hook")
        plain = new_batch(store, 2)
        for info in (hooked, plain):
            pk, got = claim_batch(store, worker, info)
            store.record(worker, [ok(pk, got[0]), fail(pk, got[1])])
        assert store.list_deliveries(plain.batch_id) == []
        [d] = store.list_deliveries(hooked.batch_id)
        assert (d.event, d.url, d.status, d.attempts) == ("batch.completed", "https://example.com/hook", "pending", [])
        [due] = store.claim_deliveries(10, 60)
        assert due.delivery_id == d.delivery_id and due.tenant == "default" and due.attempts == 0
        snap = BatchInfo.model_validate_json(due.payload)
        assert (snap.batch_id, snap.status, snap.items_succeeded, snap.items_failed) == (
            hooked.batch_id, "completed", 1, 1)
        assert store.claim_deliveries(10, 60) == []  # leased: another server does not send it too

    def test_cancel_writes_one_delivery_and_retry_reopens(self, store: Store, worker: int) -> None:
        b = new_batch(store, 3, webhook={"url": "http://example.com/h"})
        store.transition(b.batch_id, "cancel")
        assert [d.event for d in store.list_deliveries(b.batch_id)] == ["batch.cancelled"]
        c = new_batch(store, 1, webhook="http://example.com/h")
        pk, got = claim_batch(store, worker, c)
        store.record(worker, [fail(pk, got[0])])
        store.transition(c.batch_id, "retry")
        pk, got = claim_batch(store, worker, c)
        store.record(worker, [ok(pk, got[0])])
        assert [d.event for d in store.list_deliveries(c.batch_id)] == ["batch.completed", "batch.completed"]

    def test_delivery_attempts_backoff_and_give_up(self, store: Store) -> None:
        b = new_batch(store, 1, webhook="https://example.com/hook")
        store.transition(b.batch_id, "cancel")
        [due] = store.claim_deliveries(10, 0.0)
        store.finish_delivery(due.delivery_id, {"at": time.time(), "status_code": 500, "error": "HTTP 500",
                                                "duration_ms": 3.0}, time.time() + 0.05, delivered=False)
        assert store.claim_deliveries(10, 60) == []  # not due yet
        time.sleep(0.1)
        [again] = store.claim_deliveries(10, 60)
        assert again.delivery_id == due.delivery_id and again.attempts == 1 and again.payload == due.payload
        store.finish_delivery(due.delivery_id, {"at": time.time(), "status_code": None, "error": "refused",
                                                "duration_ms": 1.0}, None, delivered=False)
        [d] = store.list_deliveries(b.batch_id)
        assert d.status == "failed" and d.next_attempt_at is None
        assert [(a.status_code, a.error) for a in d.attempts] == [(500, "HTTP 500"), (None, "refused")]
        c = new_batch(store, 1, webhook="https://example.com/hook")
        store.transition(c.batch_id, "cancel")
        [due] = store.claim_deliveries(10, 60)
        store.finish_delivery(due.delivery_id, {"at": time.time(), "status_code": 204, "error": None,
                                                "duration_ms": 2.0}, None, delivered=True)
        [d] = store.list_deliveries(c.batch_id)
        assert d.status == "delivered" and d.delivered_at is not None and len(d.attempts) == 1

    def test_pending_deliveries_outlive_a_deleted_batch(self, store: Store) -> None:
        b = new_batch(store, 1, webhook="https://example.com/hook")
        store.transition(b.batch_id, "cancel")
        store.delete_batch(b.batch_id)
        [due] = store.claim_deliveries(10, 60)
        assert due.batch_id == b.batch_id and due.event == "batch.cancelled"

    def test_progress_webhooks_only_when_asked_changed_and_spaced(self, store: Store, worker: int) -> None:
        b = new_batch(store, 4, parallel=1, webhook={"url": "https://example.com/p", "progress": True})
        new_batch(store, 4, parallel=1, webhook="https://example.com/final-only")
        assert store.enqueue_progress_webhooks(60) == 1
        assert store.enqueue_progress_webhooks(0) == 0  # nothing changed since
        pk, got = claim_batch(store, worker, b, capacity=1)
        store.record(worker, [ok(pk, got[0])])
        assert store.enqueue_progress_webhooks(60) == 0  # changed, but the last one is too recent
        time.sleep(0.02)
        assert store.enqueue_progress_webhooks(0.01) == 1
        events = [d.event for d in store.list_deliveries(b.batch_id)]
        assert events == ["batch.progress", "batch.progress"]

    def test_api_keys(self, store: Store) -> None:
        a = store.add_api_key("key_a", "acme", "ci", "d" * 64)
        store.add_api_key("key_b", "beta", None, "e" * 64)
        assert a.tenant == "acme" and a.revoked_at is None
        found = store.find_api_key("d" * 64)
        assert found is not None and (found.key_id, found.tenant, found.name) == ("key_a", "acme", "ci")
        assert store.find_api_key("f" * 64) is None
        assert [k.key_id for k in store.list_api_keys()] == ["key_a", "key_b"]
        assert store.revoke_api_key("key_a").revoked_at is not None
        assert store.find_api_key("d" * 64) is None
        assert store.revoke_api_key("key_a").revoked_at is not None  # revoking twice is harmless
        with pytest.raises(NotFound):
            store.revoke_api_key("key_nope")

    def test_an_idempotency_key_creates_one_batch_per_tenant(self, store: Store) -> None:
        key = Idempotency(key="order-42", request_hash="h1")
        first = new_batch(store, 3, idempotency=key)
        found = store.find_idempotency_key("default", "order-42")
        assert found is not None and (found.batch_id, found.request_hash) == (first.batch_id, "h1")
        assert abs(found.created_at - time.time()) < 60
        for again in (key, Idempotency(key="order-42", request_hash="h2")):  # same request or not: nothing new
            with pytest.raises(IdempotencyConflict) as info:
                new_batch(store, 5, idempotency=again)
            assert (info.value.batch_id, info.value.request_hash) == (first.batch_id, "h1")
        assert [b.batch_id for b in store.list_batches()] == [first.batch_id]  # rolled back whole
        other = new_batch(store, 1, idempotency=key, tenant="acme")  # keys are per tenant
        assert other.batch_id != first.batch_id
        assert store.find_idempotency_key("acme", "order-42").batch_id == other.batch_id  # type: ignore[union-attr]
        assert store.find_idempotency_key("default", "order-43") is None
        assert store.find_idempotency_key("beta", "order-42") is None

    def test_an_idempotency_key_goes_with_its_batch(self, store: Store) -> None:
        key = Idempotency(key="k", request_hash="h")
        b = new_batch(store, 0, idempotency=key)  # no items: completed at once, so it may be deleted
        store.delete_batch(b.batch_id)
        assert store.find_idempotency_key("default", "k") is None
        again = new_batch(store, 1, idempotency=Idempotency(key="k", request_hash="h2"))
        assert store.find_idempotency_key("default", "k").batch_id == again.batch_id  # type: ignore[union-attr]

    def test_racing_submissions_with_one_key_create_one_batch(self, store: Store, reopen: Callable[[], Store]) -> None:
        handles = [store, *(reopen() for _ in range(3))]  # as several servers on one store would
        created: list[str] = []
        conflicts: list[str] = []
        barrier = threading.Barrier(len(handles))

        def submit(s: Store) -> None:
            barrier.wait()
            try:
                created.append(new_batch(s, 200, idempotency=Idempotency(key="race", request_hash="h")).batch_id)
            except IdempotencyConflict as exc:
                conflicts.append(exc.batch_id)

        threads = [threading.Thread(target=submit, args=(s,)) for s in handles]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(created) == 1 and conflicts == created * (len(handles) - 1)
        assert [b.batch_id for b in store.list_batches()] == created

    def test_settings_are_set_once(self, store: Store, reopen: Callable[[], Store]) -> None:
        assert store.get_setting("webhook_secret") is None
        assert store.put_setting_once("webhook_secret", "one") == "one"
        assert store.put_setting_once("webhook_secret", "two") == "one"
        assert reopen().get_setting("webhook_secret") == "one"

    def test_processor_stats_are_monotonic(self, store: Store, worker: int) -> None:
        b = new_batch(store, 3, max_attempts=3)
        pk, got = claim_batch(store, worker, b)
        store.record(worker, [ok(pk, got[0]), fail(pk, got[1]), retry(pk, got[2])])
        st = store.processor_stats()["noop"]
        assert (st.succeeded, st.failed, st.retried) == (1, 1, 1)
        assert len(st.buckets) == len(defaults.DURATION_BUCKETS) + 1 and sum(st.buckets) == 2
        assert 0.015 < st.duration_sum < 0.03  # two items of 10 ms
        _, again = claim_batch(store, worker, b)
        store.record(worker, [ok(pk, again[0])])
        store.delete_batch(b.batch_id)
        st = store.processor_stats()["noop"]
        assert (st.succeeded, st.failed, st.retried, sum(st.buckets)) == (2, 1, 1, 3)

    def test_tenant_usage(self, store: Store, worker: int) -> None:
        a = new_batch(store, 5, tenant="acme", parallel=2)
        new_batch(store, 3, tenant="acme", start=False)
        new_batch(store, 7, tenant="beta")
        _, got = claim_batch(store, worker, a, capacity=2)
        assert store.tenant_usage("acme") == (5 - len(got) + 3, len(got))
        assert store.tenant_usage("nobody") == (0, 0)

    def test_tenant_cap_holds_across_workers(self, store: Store) -> None:
        for _ in range(2):
            new_batch(store, 10, tenant="acme", parallel=10)
        beta = new_batch(store, 10, tenant="beta", parallel=10)
        w1 = store.register_worker("w1", ["noop"], 8)
        w2 = store.register_worker("w2", ["noop"], 8)
        r1 = store.claim(w1, PROCS, 8, {}, None, 3)
        r2 = store.claim(w2, PROCS, 8, {}, None, 3)
        by_tenant: dict[str, int] = {}
        for res in (r1, r2):
            for pk, grant in res.grants.items():
                if not grant:
                    continue
                tenant = "beta" if res.batches[pk].batch_id == beta.batch_id else "acme"
                by_tenant[tenant] = by_tenant.get(tenant, 0) + grant
        assert by_tenant == {"acme": 3, "beta": 3}

    # -- files and shared state -------------------------------------------------------------------

    def test_files_add_get_content_list_delete(self, store: Store, reopen: Callable[[], Store]) -> None:
        a = store.add_file("acme", "batch", "in.jsonl", b'{"a": 1}\n', meta={"lines": 1})
        assert (a.tenant, a.purpose, a.filename, a.bytes, a.meta) == ("acme", "batch", "in.jsonl", 9, {"lines": 1})
        assert a.file_id.startswith("file-") and a.created_at.timestamp() == pytest.approx(time.time(), abs=5)
        b = store.add_file("acme", "batch_output", "out.jsonl", io.BytesIO(b"xyz"))
        c = store.add_file("beta", "batch", "other.jsonl", b"")
        assert store.get_file(a.file_id) == a
        assert b"".join(store.file_content(a.file_id)) == b'{"a": 1}\n'
        assert b"".join(store.file_content(c.file_id)) == b""
        assert [f.file_id for f in store.list_files()] == [c.file_id, b.file_id, a.file_id]  # newest first
        assert [f.file_id for f in store.list_files(tenant="acme")] == [b.file_id, a.file_id]
        assert [f.file_id for f in store.list_files(tenant="acme", purpose="batch")] == [a.file_id]
        assert [f.file_id for f in store.list_files(limit=1, after=c.file_id)] == [b.file_id]
        assert reopen().get_file(b.file_id) == b  # files survive a restart
        store.delete_file(b.file_id)
        with pytest.raises(NotFound) as caught:
            store.get_file(b.file_id)
        assert caught.value.kind == "file"
        with pytest.raises(NotFound):
            store.file_content(b.file_id)
        with pytest.raises(NotFound):
            store.delete_file(b.file_id)

    def test_file_content_streams_in_chunks_from_a_file_position(self, store: Store) -> None:
        data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit
        fh = io.BytesIO(b"skip" + data)
        fh.seek(4)  # what is left from the current position is stored
        f = store.add_file("default", "batch", "big.bin", fh)
        assert f.bytes == len(data)
        chunks = list(store.file_content(f.file_id, chunk_size=300_000))
        assert [len(c) for c in chunks] == [300_000, 300_000, 300_000, len(data) - 900_000]
        assert b"".join(chunks) == data

    def test_file_with_a_chosen_id_is_written_once(self, store: Store) -> None:
        first = store.add_file("acme", "batch_output", "out.jsonl", b"one", file_id="file-out-1")
        again = store.add_file("acme", "batch_output", "out.jsonl", b"two!", file_id="file-out-1")
        assert again == first and b"".join(store.file_content("file-out-1")) == b"one"

    def test_shared_state_updates_atomically(self, store: Store, reopen: Callable[[], Store]) -> None:
        assert store.get_shared_state("upstream:x") is None
        seen: list[dict[str, Any] | None] = []

        def bump(state: dict[str, Any] | None, now: float) -> dict[str, Any]:
            seen.append(state)
            assert now == pytest.approx(time.time(), abs=5)  # the store's clock
            return {"n": (state or {"n": 0})["n"] + 1}

        assert store.update_shared_state("upstream:x", bump) == {"n": 1}
        assert seen == [None]
        others = [reopen() for _ in range(3)]

        def hammer(s: Store) -> None:
            for _ in range(20):
                s.update_shared_state("upstream:x", bump)

        threads = [threading.Thread(target=hammer, args=(s,)) for s in [store, *others]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.get_shared_state("upstream:x") == {"n": 81}  # no update lost
        assert store.get_shared_state("upstream:y") is None

    # -- schema ---------------------------------------------------------------------------------

    # -- cost: budgets and samples ------------------------------------------------------------------

    def test_budget_caps_claims_counting_items_in_flight(self, store: Store) -> None:
        b = new_batch(store, 10, cost_per_item=1.0, cost_unit="EUR", budget=3.5)
        assert (b.budget, b.cost_estimated, b.cost_projected) == (3.5, 10.0, 10.0)
        w1, w2 = (store.register_worker(f"w{n}", ["noop"], 8) for n in (1, 2))
        pk, got = claim_batch(store, w1, b)
        assert len(got) == 3  # floor(3.5 / 1.0): the budget, not the capacity of 8
        # the items in flight count against the budget: another worker gets nothing
        assert items_of(claim(store, w2, only={b.batch_id}), b.batch_id) == []
        store.record(w1, [ok(pk, c, cost=1.0) for c in got])
        after = store.get_batch(b.batch_id)
        assert (after.status, after.pause_reason) == ("paused", "budget_reached")
        assert (after.cost_total, after.items_pending, after.items_succeeded) == (3.0, 7, 3)
        assert after.cost_projected == 10.0  # 3 spent + 7 left at 1.0
        assert items_of(claim(store, w2, only={b.batch_id}), b.batch_id) == []

    def test_raising_the_budget_and_resuming_continues(self, store: Store, worker: int) -> None:
        b = new_batch(store, 6, cost_per_item=1.0, budget=2.0)
        pk, got = claim_batch(store, worker, b)
        store.record(worker, [ok(pk, c, cost=1.0) for c in got])
        assert store.get_batch(b.batch_id).pause_reason == "budget_reached"
        # resuming without more budget pauses again at once: not one more item fits
        again = store.transition(b.batch_id, "resume")
        assert (again.status, again.pause_reason) == ("paused", "budget_reached")
        raised = store.set_budget(b.batch_id, 4.0)
        assert (raised.budget, raised.status) == (4.0, "paused")
        assert store.transition(b.batch_id, "resume").status == "running"
        pk, got = claim_batch(store, worker, b)
        assert len(got) == 2
        store.record(worker, [ok(pk, c, cost=1.0) for c in got])
        assert store.get_batch(b.batch_id).pause_reason == "budget_reached"
        store.set_budget(b.batch_id, None)  # no budget: it runs to the end
        store.transition(b.batch_id, "resume")
        pk, got = claim_batch(store, worker, b)
        store.record(worker, [ok(pk, c, cost=1.0) for c in got])
        end = store.get_batch(b.batch_id)
        assert (end.status, end.cost_total, end.budget) == ("completed", 6.0, None)

    def test_budget_follows_actual_costs_above_the_estimate(self, store: Store, worker: int) -> None:
        b = new_batch(store, 10, cost_per_item=0.5, budget=5.0)
        pk, got = claim_batch(store, worker, b, capacity=1)
        assert len(got) == 2  # one slot, and one item claimed ahead
        store.record(worker, [ok(pk, c, cost=2.0) for c in got])  # they cost 2.0, not 0.5
        # 1.0 left at 2.0 an item (the actual average, above the estimate): none fits, and none is in flight
        assert store.get_batch(b.batch_id).pause_reason == "budget_reached"

    def test_unknown_item_cost_runs_one_item_at_a_time(self, store: Store, worker: int) -> None:
        b = new_batch(store, 5, budget=1.0)  # no cost model: nothing says what an item costs
        assert b.cost_estimated is None and b.cost_projected is None
        pk, got = claim_batch(store, worker, b)
        assert len(got) == 1
        assert items_of(claim(store, worker, held={pk: Held(in_flight=1)}, only={b.batch_id}), b.batch_id) == []
        store.record(worker, [ok(pk, got[0], cost=0.25)])  # now an item is known to cost 0.25
        pk, got = claim_batch(store, worker, b)
        assert len(got) == 3 and store.get_batch(b.batch_id).cost_projected == 1.25

    def test_lowering_the_budget_of_an_idle_batch_pauses_it(self, store: Store) -> None:
        b = new_batch(store, 4, cost_per_item=1.0, budget=10.0)
        low = store.set_budget(b.batch_id, 0.5)
        assert (low.status, low.pause_reason, low.budget) == ("paused", "budget_reached", 0.5)

    def test_estimated_cost_is_kept_as_given(self, store: Store) -> None:
        b = new_batch(store, 4, cost_estimated=12.5, cost_unit="tokens")
        got = store.get_batch(b.batch_id)
        assert (got.cost_estimated, got.cost_projected, got.cost_unit) == (12.5, 12.5, "tokens")

    def test_lease_items_takes_chosen_pending_items_of_a_pending_batch(self, store: Store, worker: int) -> None:
        b = new_batch(store, 6, start=False)
        res = store.lease_items(worker, b.batch_id, [2, 5, 5, 99])
        pk = pk_of(res, b.batch_id)
        got = items_of(res, b.batch_id)
        assert [c.seq for c in got] == [2, 5] and all(c.attempts == 1 for c in got)
        assert counts(store, b.batch_id) == (6, 4, 2, 0, 0, 0)
        assert items_of(store.lease_items(worker, b.batch_id, [2]), b.batch_id) == []  # already leased
        store.record(worker, [ok(pk, c, cost=0.5) for c in got])
        after = store.get_batch(b.batch_id)
        assert (after.status, after.items_succeeded, after.cost_total) == ("pending", 2, 1.0)
        # the batch's own run skips them
        store.transition(b.batch_id, "start")
        pk, rest = claim_batch(store, worker, b)
        assert [c.seq for c in rest] == [1, 3, 4, 6]
        assert_counters_match_items(store, b.batch_id)

    # -- shared resources per batch -----------------------------------------------------------------

    def test_resource_is_set_up_by_one_worker_while_others_wait(self, store: Store) -> None:
        b = new_batch(store, 3)
        pk = pk_of(claim(store, store.register_worker("w0", ["noop"], 8)), b.batch_id)
        w1, w2 = (store.register_worker(f"w{n}", ["noop"], 8) for n in (1, 2))
        assert store.get_batch(b.batch_id).resource is None
        assert store.acquire_resource(pk, w1) == ("setup", None)
        assert store.acquire_resource(pk, w2).status == "wait"
        assert store.acquire_resource(pk, w1) == ("setup", None)  # the holder may ask again
        assert store.save_resource(pk, w1, {"stamp": "s1", "usable": False}, ready=False)
        assert not store.save_resource(pk, w2, {"stamp": "s2"}, ready=True)  # not the holder
        during = store.get_batch(b.batch_id).resource
        assert during is not None and (during.status, during.state) == ("setup", {"stamp": "s1", "usable": False})
        assert store.save_resource(pk, w1, {"stamp": "s1", "usable": True}, ready=True, capacity=200.0, cost=0.25)
        assert store.acquire_resource(pk, w2) == ("ready", {"stamp": "s1", "usable": True})
        assert store.acquire_resource(pk, w1).status == "ready"
        got = store.get_batch(b.batch_id)
        info = got.resource
        assert info is not None and (info.status, info.capacity, info.used) == ("ready", 200.0, 0.0)
        assert got.cost_total == 0.25  # what the setup cost is spent by the batch

    def test_resource_setup_of_a_lost_worker_passes_on_with_its_checkpoint(self, store: Store) -> None:
        b = new_batch(store, 3)
        w1, w2 = (store.register_worker(f"w{n}", ["noop"], 8) for n in (1, 2))
        pk = pk_of(claim(store, w1), b.batch_id)
        assert store.acquire_resource(pk, w1).status == "setup"
        assert store.save_resource(pk, w1, {"stamp": "bought"}, ready=False)
        store.unregister_worker(w1)  # as when it is reaped after kill -9
        assert store.acquire_resource(pk, w2) == ("setup", {"stamp": "bought"})  # not from nothing
        assert not store.save_resource(pk, w1, {"stamp": "late"}, ready=True)  # the lost one is fenced off
        assert store.save_resource(pk, w2, {"stamp": "bought", "usable": True}, ready=True)
        assert store.get_batch(b.batch_id).resource.state == {"stamp": "bought", "usable": True}

    def test_a_failed_setup_lets_go_of_the_lock(self, store: Store) -> None:
        b = new_batch(store, 3)
        w1, w2 = (store.register_worker(f"w{n}", ["noop"], 8) for n in (1, 2))
        pk = pk_of(claim(store, w1), b.batch_id)
        assert store.acquire_resource(pk, w1).status == "setup"
        store.release_resource(pk, w1)
        assert store.acquire_resource(pk, w2).status == "setup"

    def test_resource_usage_utilisation_and_closing_once(self, store: Store, worker: int) -> None:
        b = new_batch(store, 2)
        pk, got = claim_batch(store, worker, b)
        store.acquire_resource(pk, worker)
        store.save_resource(pk, worker, {"session": 7}, ready=True, capacity=40.0)
        store.use_resource({pk: 6.0})
        store.use_resource({pk: 4.0})
        info = store.get_batch(b.batch_id).resource
        assert info is not None and (info.used, info.utilization_percent) == (10.0, 25.0)
        assert store.resources_to_close(["noop"]) == []  # still running
        store.record(worker, [ok(pk, c) for c in got])
        assert store.get_batch(b.batch_id).status == "completed"
        assert store.resources_to_close(["other"]) == []
        assert store.resources_to_close(["noop"]) == [(pk, b.batch_id, "noop", {})]
        assert store.close_resource(pk) == {"session": 7}
        assert store.close_resource(pk) is None  # closed once
        assert store.resources_to_close(["noop"]) == []
        assert store.get_batch(b.batch_id).resource.status == "closed"

    def test_a_reopened_batch_sets_its_resource_up_again_from_the_closed_one(self, store: Store, worker: int) -> None:
        b = new_batch(store, 1)
        pk, got = claim_batch(store, worker, b)
        store.acquire_resource(pk, worker)
        store.save_resource(pk, worker, {"stamp": "old"}, ready=True)
        store.record(worker, [fail(pk, got[0])])
        store.close_resource(pk)
        store.transition(b.batch_id, "retry")
        assert store.acquire_resource(pk, worker) == ("setup", {"stamp": "old"})

    # -- workers' throttle notes --------------------------------------------------------------------

    def test_throttle_notes_show_on_the_running_batches_served_until_cleared(self, store: Store) -> None:
        served, other_proc = new_batch(store, 2), new_batch(store, 2, processor="sleep")
        paused, only = new_batch(store, 2), new_batch(store, 2)
        store.transition(paused.batch_id, "pause")
        note = "throttled: memory 91% > 90%"
        store.set_throttle(note, ["noop"])
        assert store.get_batch(served.batch_id).throttled == note
        assert store.get_batch(other_proc.batch_id).throttled is None
        assert store.get_batch(paused.batch_id).throttled is None
        store.set_throttle(None, ["noop"])
        assert store.get_batch(served.batch_id).throttled is None
        store.set_throttle(note, ["noop"], only={only.batch_id})
        assert [store.get_batch(b.batch_id).throttled for b in (served, only)] == [None, note]
        store.transition(only.batch_id, "pause")  # shown only while the batch runs
        assert store.get_batch(only.batch_id).throttled is None

    def test_reopening_keeps_data(self, store: Store, reopen: Callable[[], Store]) -> None:
        b = new_batch(store, 2)
        other = reopen()
        assert other.get_batch(b.batch_id).items_total == 2

    def test_newer_schema_version_is_refused(self, store: Store, reopen: Callable[[], Store]) -> None:
        new_batch(store, 1)
        self.set_schema_version(store, 10_000)
        with pytest.raises(SchemaVersionError):
            reopen()


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, store_path: Path) -> Iterator[SQLiteStore]:
        s = SQLiteStore(store_path)
        yield s
        s.close()

    @pytest.fixture
    def reopen(self, store_path: Path) -> Iterator[Callable[[], SQLiteStore]]:
        opened: list[SQLiteStore] = []

        def make() -> SQLiteStore:
            s = SQLiteStore(store_path)
            opened.append(s)
            return s

        yield make
        for s in opened:
            s.close()

    def set_schema_version(self, store: Store, version: int) -> None:
        assert isinstance(store, SQLiteStore)
        conn = sqlite3.connect(store.path)
        with conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.close()

    def test_store_satisfies_the_protocol(self, store: SQLiteStore) -> None:
        assert isinstance(store, Store)
        assert store.url == f"sqlite:///{store.path}"

    def test_pragmas(self, store: SQLiteStore) -> None:
        def check(out: dict[str, Any]) -> None:
            out.update({name: store.pragma(name) for name in ("journal_mode", "synchronous", "busy_timeout")})

        here: dict[str, Any] = {}
        check(here)
        assert here == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": defaults.SQLITE_BUSY_TIMEOUT_MS}
        assert defaults.SQLITE_BUSY_TIMEOUT_MS == 30000
        there: dict[str, Any] = {}  # every thread's connection is set up the same way
        t = threading.Thread(target=check, args=(there,))
        t.start()
        t.join()
        assert there == here

    def test_schema_version_is_latest_migration(self, store: SQLiteStore) -> None:
        from batchyard.store.sql import migrations

        assert store.schema_version() == migrations("sqlite")[-1][0]
