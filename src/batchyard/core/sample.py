"""Estimates: what a batch would cost and take, from the processor's cost model or from a sample run for real.

A sample is part of the batch it estimates: its items are leased, run and recorded in the store like any
others (the same outcome, retry and cost rules), so running the batch afterwards skips them. It runs in the
caller's process, outside any worker: the batch is still pending, which no worker claims from.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import math
import os
import random
import socket
import time
from collections.abc import Iterable
from typing import Any

from batchyard.core import resources
from batchyard.core.execute import Attempt, ainvoke, invoke, timed_out, to_outcome
from batchyard.core.models import Estimate, NewItem, ProcessorStats, SampleReport
from batchyard.core.processor import Processor
from batchyard.core.store import OK, BatchRuntime, Claimed, Outcome, Store


def model_totals(proc: Processor, params: dict[str, Any], items: Iterable[NewItem | tuple[str | None, Any]]
                 ) -> tuple[int, float | None]:
    """(item count, the cost model's total over them): every item read once, none kept."""
    count, total = 0, 0.0
    priced = proc.cost_model is not None or bool(proc.cost_per_item)
    for it in items:
        count += 1
        if proc.cost_model is not None:
            total += proc.estimate_cost(it.payload if isinstance(it, NewItem) else it[1], params)
    if not priced:
        return count, None
    return count, total if proc.cost_model is not None else count * proc.cost_per_item


def mean_seconds(stats: ProcessorStats | None) -> float | None:
    """Mean duration of one item of this processor so far (its monotonic statistics), if it ever ran."""
    if stats is None or not stats.succeeded + stats.failed:
        return None
    return stats.duration_sum / (stats.succeeded + stats.failed)


def duration(proc: Processor, items: int, parallel: int, item_seconds: float | None) -> float | None:
    """Wall-clock seconds for ``items`` at ``parallel`` (capped by the processor's concurrency), and no
    faster than its rate limit allows."""
    if items == 0:
        return 0.0
    lanes = min(parallel, proc.concurrency or parallel)
    by_time = None if item_seconds is None else item_seconds * math.ceil(items / lanes)
    by_rate = items / proc.rate_limit.per_second if proc.rate_limit else None
    known = [d for d in (by_time, by_rate) if d is not None]
    return round(max(known), 3) if known else None


def by_model(proc: Processor, params: dict[str, Any], items: Iterable[NewItem | tuple[str | None, Any]],
             parallel: int, stats: ProcessorStats | None) -> Estimate:
    count, total = model_totals(proc, params, items)
    return Estimate(processor=proc.name, items=count, method="model", cost_unit=proc.cost_unit,
                    cost_estimated=total, cost_per_item=total / count if total is not None and count else None,
                    cost_model_total=total, duration_s=duration(proc, count, parallel, mean_seconds(stats)),
                    parallel=parallel)


def run_sample(store: Store, proc: Processor, batch_id: str, size: int, parallel: int, *,
               seed: int | None = None) -> SampleReport:
    """Run a random sample of ``size`` pending items of the batch for real, recording their outcomes."""
    info = store.get_batch(batch_id)
    rng = random.Random(seed)
    seqs = sorted(rng.sample(range(1, info.items_total + 1), min(size, info.items_total)))
    worker_pk = store.register_worker(f"{socket.gethostname()}:{os.getpid()}:sample", [proc.name], parallel)
    started = time.monotonic()
    outcomes: list[Outcome] = []
    try:
        leased = store.lease_items(worker_pk, batch_id, seqs)
        for pk, claimed in leased.items.items():
            rt = leased.batches[pk]
            if proc.resource is not None:  # the batch's shared resource: set up now, kept for the batch's run
                state = resources.obtain(store, proc.resource, pk, batch_id, worker_pk, rt.params)
                rt = dataclasses.replace(rt, resource=state)
            done, used = _run(proc, rt, [tuple(c) for c in claimed], parallel)  # type: ignore[misc]
            outcomes.extend(done)
            if done:
                store.record(worker_pk, done)
            if used:
                store.use_resource({pk: used})
    finally:
        store.unregister_worker(worker_pk)  # anything left leased goes back to pending
    seconds = time.monotonic() - started
    ok = sum(1 for o in outcomes if o[2] == OK)
    took = [(o[6] - o[5]) / 1e6 for o in outcomes]
    return SampleReport(size=len(outcomes), succeeded=ok, failed=len(outcomes) - ok,
                        cost=round(sum(o[7] or 0.0 for o in outcomes), 12), seconds=round(seconds, 3),
                        mean_item_seconds=round(sum(took) / len(took), 6) if took else None)


def _run(proc: Processor, rt: BatchRuntime, claimed: list[Claimed], parallel: int) -> tuple[list[Outcome], float]:
    """Outcomes of the claimed items, and what they used of the batch's resource."""
    policy = dataclasses.replace(proc.retry, max_attempts=rt.max_attempts)
    if proc.mode == "async":
        attempts = asyncio.run(_run_async(proc, rt, claimed, parallel))
    else:
        lanes = max(1, min(parallel, len(claimed)))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="batchyard-sample")
        started = time.time()
        futures = [pool.submit(invoke, proc, rt, c) for c in claimed]
        # Thread lanes cannot be interrupted: items still running once every item could have used its whole
        # timeout are recorded as timed out, as a worker does, and their threads are left to end on their own.
        limit = proc.timeout * math.ceil(len(claimed) / lanes) + 1 if proc.timeout else None
        done, _ = concurrent.futures.wait(futures, timeout=limit)
        attempts = [f.result() if f in done else timed_out(proc, c, started)
                    for f, c in zip(futures, claimed, strict=True)]
        pool.shutdown(wait=False, cancel_futures=True)
    return [to_outcome(a, c, rt, policy) for a, c in zip(attempts, claimed, strict=True)], sum(a.used for a in attempts)


async def _run_async(proc: Processor, rt: BatchRuntime, claimed: list[Claimed], parallel: int) -> list[Attempt]:
    gate = asyncio.Semaphore(parallel)

    async def one(c: Claimed) -> Attempt:
        async with gate:
            return await ainvoke(proc, rt, c)

    return list(await asyncio.gather(*(one(c) for c in claimed)))


def extrapolate(proc: Processor, items: int, parallel: int, sample: SampleReport, model_total: float | None,
                batch_id: str) -> Estimate:
    """The batch's estimate from its sample: the sample's mean actual cost and time per item, for every item."""
    per = sample.cost / sample.size if sample.size else None
    return Estimate(processor=proc.name, items=items, method="sample", cost_unit=proc.cost_unit,
                    cost_estimated=per * items if per is not None else None, cost_per_item=per,
                    cost_model_total=model_total, duration_s=duration(proc, items, parallel, sample.mean_item_seconds),
                    parallel=parallel, sample=sample, batch_id=batch_id)
