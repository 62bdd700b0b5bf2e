"""The Python API: the engine for people who build batches in code, on the local store."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from batchyard.core import defaults
from batchyard.core.engine import Engine
from batchyard.core.models import BatchInfo, BatchSpec, FailurePolicy, ItemInfo, NewItem, Priority
from batchyard.core.processor import Processor
from batchyard.core.store import Store
from batchyard.io.inputs import from_iterable
from batchyard.store import open_store


class Batch:
    """A handle on a batch: its status, control, and its results to iterate."""

    def __init__(self, engine: Engine, batch_id: str) -> None:
        self._engine = engine
        self.id = batch_id

    def __repr__(self) -> str:
        return f"Batch({self.id!r})"

    def status(self) -> BatchInfo:
        return self._engine.status(self.id)

    def results(self, status: str | None = None) -> Iterator[ItemInfo]:
        """Every item in input order (or only those with ``status``), streamed from the store."""
        return self._engine.items(self.id, status=status)

    def __iter__(self) -> Iterator[ItemInfo]:
        return self.results()

    def pause(self) -> BatchInfo:
        return self._engine.pause(self.id)

    def resume(self) -> BatchInfo:
        return self._engine.resume(self.id)

    def cancel(self) -> BatchInfo:
        return self._engine.cancel(self.id)


def _engine(store: str | Store | None, processors: Iterable[str] = ()) -> Engine:
    st = store if store is not None and not isinstance(store, str) else open_store(store)
    return Engine(st, processors)


def _rows(items: Iterable[Any], processor: Processor, params: dict[str, Any]) -> Iterator[tuple[str | None, Any]]:
    """(key, payload) rows, checked like a file's: objects against the processor's parameter model."""
    keys: deque[str | None] = deque()

    def payloads() -> Iterator[Any]:
        for it in items:
            keys.append(it.key if isinstance(it, NewItem) else None)
            yield it.payload if isinstance(it, NewItem) else it

    for key, payload in from_iterable(payloads(), processor=processor, params=params):
        own = keys.popleft()
        yield (own if own is not None else key), payload


def run(items: Iterable[Any], processor: str | Processor, *, params: dict[str, Any] | None = None,
        parallel: int = defaults.PARALLEL, priority: str = "normal", max_failures: int | None = None,
        max_failure_rate: float | None = None, description: str | None = None, tags: list[str] | None = None,
        store: str | Store | None = None, processors: Iterable[str] = (),
        on_progress: Callable[[BatchInfo], None] | None = None) -> Batch:
    """Create a batch of ``items``, run it in this process until it ends, and return its handle.

    ``processor`` is a registered name or a function decorated with ``@batchyard.processor``.
    ``items`` are JSON-able values (or ``NewItem`` for items with their own ids).
    """
    engine = _engine(store, processors)
    name = processor.name if isinstance(processor, Processor) else processor
    spec = BatchSpec(processor=name, params=params or {}, parallel=parallel, priority=Priority(priority),
                     failure_policy=FailurePolicy(max_failures=max_failures, max_failure_rate=max_failure_rate),
                     description=description, tags=tags or [])
    info = engine.submit(spec, _rows(items, engine.processor(name), spec.params))
    engine.run(info.batch_id, on_progress=on_progress)
    return Batch(engine, info.batch_id)


async def arun(items: Iterable[Any], processor: str | Processor, **kwargs: Any) -> Batch:
    """``run`` for async code: the batch runs without blocking the caller's event loop."""
    return await asyncio.to_thread(run, items, processor, **kwargs)


def batch(batch_id: str, *, store: str | Store | None = None) -> Batch:
    return Batch(_engine(store), batch_id)


@contextmanager
def _local(store: str | Store | None) -> Iterator[Engine]:
    """An engine for one call; a store opened here is closed here."""
    engine = _engine(store)
    try:
        yield engine
    finally:
        if store is None or isinstance(store, str):
            engine.store.close()


def status(batch_id: str, *, store: str | Store | None = None) -> BatchInfo:
    with _local(store) as engine:
        return engine.status(batch_id)


def pause(batch_id: str, *, store: str | Store | None = None) -> BatchInfo:
    with _local(store) as engine:
        return engine.pause(batch_id)


def resume(batch_id: str, *, store: str | Store | None = None) -> BatchInfo:
    with _local(store) as engine:
        return engine.resume(batch_id)


def cancel(batch_id: str, *, store: str | Store | None = None) -> BatchInfo:
    with _local(store) as engine:
        return engine.cancel(batch_id)


def fingerprint(processor: str, params: dict[str, Any], content_hash: str, fmt: str) -> str:
    """What makes two runs "the same command": processor, params, input content and format."""
    blob = json.dumps([processor, params, content_hash, fmt], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
