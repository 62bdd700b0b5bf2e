"""An idle worker on a store that announces new work waits for the announcement instead of polling.

A fleet of idle workers on one PostgreSQL database must cost it next to nothing (the scale-out benchmark
measures under 10 queries a second for four): each empty claim is a transaction, so an idle worker claims
when told of work, and otherwise only at a slow fallback poll. Stores that cannot tell (SQLite) keep the
quick poll. A real SQLite store does the work; a thin wrapper plays the announcing store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.core import defaults
from batchyard.core import processor as registry
from batchyard.core.models import BatchSpec, NewItem
from batchyard.core.worker import Worker
from batchyard.store.sqlite import SQLiteStore

pytestmark = pytest.mark.timeout(30)


class Announcing:
    """A store that announces work: ``wait_for_work`` blocks until ``announce()`` (or the timeout)."""

    announces_work = True

    def __init__(self, inner: SQLiteStore) -> None:
        self._inner = inner
        self._event = threading.Event()
        self.claims = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        self.claims += 1
        return self._inner.claim(*args, **kwargs)

    def wait_for_work(self, timeout: float) -> bool:
        got = self._event.wait(timeout)
        self._event.clear()
        return got

    def announce(self) -> None:
        self._event.set()


class Counting(Announcing):
    """The same store, but one that cannot announce (as SQLite): ``wait_for_work`` returns False at once."""

    announces_work = False

    def wait_for_work(self, timeout: float) -> bool:
        return False


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "idle.db")
    yield s
    s.close()


def _idle_claims(store: Announcing, seconds: float) -> int:
    w = Worker(store, registry.load([]), concurrency=2)  # type: ignore[arg-type]
    w.start()
    try:
        time.sleep(seconds)
        return store.claims
    finally:
        w.stop(grace=1)


def test_an_idle_worker_does_not_poll_a_store_that_announces_work(sqlite: SQLiteStore) -> None:
    claims = _idle_claims(Announcing(sqlite), 1.5)
    assert claims <= 2, f"{claims} claims in 1.5 s while idle"  # the first look, and none until the fallback
    assert defaults.IDLE_LISTEN_POLL_SECONDS >= 5 * defaults.IDLE_POLL_SECONDS


def test_an_idle_worker_polls_a_store_that_cannot_announce(sqlite: SQLiteStore) -> None:
    claims = _idle_claims(Counting(sqlite), 1.5)
    assert claims >= 1.5 / defaults.IDLE_POLL_SECONDS - 2  # every IDLE_POLL_SECONDS, as before


def test_an_announcement_starts_the_work_at_once(sqlite: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "IDLE_LISTEN_POLL_SECONDS", 60.0)  # only the announcement can start it soon
    store = Announcing(sqlite)
    w = Worker(store, registry.load([]), concurrency=2)  # type: ignore[arg-type]
    w.start()
    try:
        time.sleep(0.5)  # idle, waiting for an announcement
        b = sqlite.create_batch(BatchSpec(processor="noop"), [NewItem(payload=i) for i in range(3)])
        t0 = time.monotonic()
        store.announce()
        while not sqlite.get_batch(b.batch_id).is_final:
            assert time.monotonic() - t0 < 10, "the worker did not take the announced work at once"
            time.sleep(0.02)
    finally:
        w.stop(grace=1)
