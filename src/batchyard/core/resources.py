"""Shared resources per batch: set up once before the batch's first item, handed to every item, torn down at its end.

A processor declares one (``@processor(..., resource=StampResource)``): buying a postage stamp, opening a
session, warming a model. Its state is a small JSON object stored with the batch, so a resumed batch, another
worker or a restarted server reuses it instead of setting it up again. Every worker goes through the store:

* ``acquire_resource`` answers ``ready`` (here it is), ``setup`` (this worker sets it up: nobody else is), or
  ``wait`` (another live worker is setting it up). A worker that dies mid-setup leaves the lock to the next one,
  with whatever the setup checkpointed (``ctx.checkpoint``): a setup that bought a stamp and then crashed while
  waiting for it to become usable hands the stamp to its successor instead of buying a second.
* Items get the state as ``ctx.resource`` and report what they used of it (``ctx.use_resource``); the batch
  shows capacity, used and utilisation.
* Once the batch is final, one worker wins ``close_resource`` and calls ``teardown`` (a retried batch then sets
  it up again, seeing the closed state as ``ctx.previous``).

Do not keep secrets in the state: it is shown with the batch (to its tenant). Keep them in the processor's
environment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from batchyard.core.errors import BatchyardError

if TYPE_CHECKING:
    from batchyard.core.models import BatchInfo
    from batchyard.core.store import Store

log = logging.getLogger("batchyard.resources")
WAIT_SECONDS = 0.2  # how often a worker looks again while another sets the resource up


class ResourceContext:
    """Handed to ``setup`` and ``teardown``: which batch (``batch``: its status, when a setup reads it), its
    shared params, what an interrupted setup left (``previous``) and a durable checkpoint."""

    def __init__(self, batch_id: str, params: dict[str, Any], previous: dict[str, Any] | None,
                 checkpoint: Callable[[dict[str, Any]], None], logger: logging.Logger = log,
                 batch: BatchInfo | None = None) -> None:
        self.batch_id = batch_id
        self.params = params
        self.batch = batch
        self.previous = previous
        self.capacity: float | None = None
        self.cost = 0.0
        self.logger = logger
        self._checkpoint = checkpoint

    @property
    def idempotency_key(self) -> str:
        """Stable for the batch: pass it to services that deduplicate requests."""
        return f"{self.batch_id}:resource"

    def report_cost(self, amount: float) -> None:
        """What setting the resource up cost (a stamp's price), in the batch's cost unit: it counts as spent by
        the batch once the resource is stored (and against its budget)."""
        self.cost += float(amount)

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Store a partial state durably now (a stamp bought but not yet usable, say): a setup interrupted after
        this sees it as ``ctx.previous`` instead of starting from nothing."""
        self._checkpoint(state)


class Resource:
    """Subclass it and give the processor the class (or an instance).

    ``capacity`` (or ``ctx.capacity`` set in ``setup``) says how much the resource holds, in any unit the items
    report with ``ctx.use_resource``; the batch's status shows used / capacity.
    """

    capacity: float | None = None

    def setup(self, ctx: ResourceContext) -> dict[str, Any]:
        """Acquire the resource; return its state (a JSON object). ``ctx.previous`` is what an interrupted setup
        checkpointed, or the state of this batch's resource before it was closed (a retried batch): reuse it
        if it is still good. Raise ``PermanentError`` if it can never work (the items then fail at once)."""
        raise NotImplementedError

    def teardown(self, state: dict[str, Any], ctx: ResourceContext) -> None:
        """Release it once the batch is final (close a session). Nothing to do by default: a stamp stays bought."""


class ResourceUnavailable(BatchyardError):
    """The batch's resource could not be set up; the items claimed meanwhile fail with this (and are retried)."""


def resource_of(proc: Any) -> Resource | None:
    return getattr(proc, "resource", None)


def obtain(store: Store, resource: Resource, batch_pk: int, batch_id: str, worker_pk: int, params: dict[str, Any],
           stop: Callable[[], bool] = lambda: False) -> dict[str, Any] | None:
    """The batch's resource: the stored one, or set up here if nobody else is setting it up (waiting while someone
    is). None if ``stop`` says to give up first. A failing setup lets go of the lock and raises."""
    while not stop():
        got = store.acquire_resource(batch_pk, worker_pk)
        if got.status == "ready":
            return got.state or {}
        if got.status == "wait":
            time.sleep(WAIT_SECONDS)
            continue

        def checkpoint(state: dict[str, Any]) -> None:
            if not store.save_resource(batch_pk, worker_pk, state, ready=False):
                raise ResourceUnavailable(f"batch {batch_id}: another worker took over the resource's setup")

        ctx = ResourceContext(batch_id, params, got.state, checkpoint, batch=store.get_batch(batch_id))
        ctx.capacity = resource.capacity
        try:
            state = resource.setup(ctx)
            if not isinstance(state, dict):
                raise TypeError(f"{type(resource).__name__}.setup returned {type(state).__name__}, not a dict")
        except BaseException:
            store.release_resource(batch_pk, worker_pk)
            raise
        if store.save_resource(batch_pk, worker_pk, state, ready=True, capacity=ctx.capacity, cost=ctx.cost):
            log.info("batch %s: resource %s set up", batch_id, type(resource).__name__)
            return state
        # This worker lost the setup (it was presumed dead meanwhile): the next look finds who has it.
    return None


def close(store: Store, resource: Resource, batch_pk: int, batch_id: str, params: dict[str, Any]) -> bool:
    """Tear the resource of a final batch down, if this caller is the one to close it; True if it did."""
    state = store.close_resource(batch_pk)
    if state is None:
        return False
    ctx = ResourceContext(batch_id, params, state, lambda s: None)
    try:
        resource.teardown(state, ctx)
    except Exception as exc:  # the batch is over either way: say so, and do not retry a teardown forever
        log.warning("batch %s: teardown of %s failed: %s", batch_id, type(resource).__name__, exc)
    return True
