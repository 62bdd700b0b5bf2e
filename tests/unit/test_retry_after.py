"""``RetryAfter``: a processor says when to retry (a service's 429/503 Retry-After), instead of the backoff."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import batchyard
from batchyard.core.errors import RetryAfter
from batchyard.core.execute import ainvoke, invoke, to_outcome
from batchyard.core.processor import Context, Item, Processor, processor
from batchyard.core.retry import GiveUp, Retry, RetryPolicy, decide
from batchyard.core.store import FAIL, RETRY, BatchRuntime, Claimed, Outcome

RT = BatchRuntime(pk=1, batch_id="batch_r", processor="p", params={}, max_attempts=3, status="running",
                  cost_per_item=0.0)
# A backoff far from the Retry-After values below, so that a test cannot pass by using the wrong one.
POLICY = RetryPolicy(max_attempts=3, base_delay=100.0, max_delay=100.0, jitter=False)


def claimed(attempts: int) -> Claimed:
    return Claimed(rowid=1, seq=1, key=None, payload="x", attempts=attempts)


def test_decide_uses_retry_after_instead_of_the_backoff() -> None:
    assert decide(1, POLICY, 1000.0, retry_after=2.5) == Retry(1002.5)
    assert decide(1, POLICY, 1000.0) == Retry(1100.0)
    assert decide(1, POLICY, 1000.0, retry_after=-3) == Retry(1000.0)  # never in the past
    # it still counts as an attempt, and a permanent error still wins
    assert isinstance(decide(3, POLICY, 1000.0, retry_after=1), GiveUp)
    assert isinstance(decide(1, POLICY, 1000.0, permanent=True, retry_after=1), GiveUp)


def test_retry_after_error() -> None:
    assert RetryAfter(1.5).seconds == 1.5 and str(RetryAfter(1.5)) == "retry after 1.5s"
    assert RetryAfter(-1, "HTTP 429").seconds == 0.0 and str(RetryAfter(-1, "HTTP 429")) == "HTTP 429"
    assert batchyard.RetryAfter is RetryAfter


def make(fn: Any) -> Processor:
    return processor("unit-retry-after-" + uuid.uuid4().hex[:8], retry=POLICY)(fn)


def test_invoke_turns_retry_after_into_a_retry_at_that_time() -> None:
    def limited(item: Item, ctx: Context) -> None:
        raise RetryAfter(0.75, "HTTP 429 Too Many Requests")

    p = make(limited)
    a = invoke(p, RT, claimed(1))
    assert not a.ok and not a.permanent and a.error is not None
    assert (a.error["type"], a.error["message"], a.error["retry_after"]) == \
        ("RetryAfter", "HTTP 429 Too Many Requests", 0.75)
    o = Outcome._make(to_outcome(a, claimed(1), RT, p.retry))
    assert o.kind == RETRY and o.not_before == pytest.approx((a.finished + 0.75) * 1e6, abs=2)
    assert Outcome._make(to_outcome(invoke(p, RT, claimed(3)), claimed(3), RT, p.retry)).kind == FAIL


def test_async_processors_too() -> None:
    async def limited(item: Item, ctx: Context) -> None:
        raise RetryAfter(2)

    p = make(limited)
    a = asyncio.run(ainvoke(p, RT, claimed(1)))
    assert a.error is not None and a.error["retry_after"] == 2.0
    assert Outcome._make(to_outcome(a, claimed(1), RT, p.retry)).not_before == pytest.approx(
        (a.finished + 2) * 1e6, abs=2)


def test_a_batch_waits_as_long_as_the_processor_says(tmp_path: Path) -> None:
    starts: dict[str, list[float]] = {}

    def once_limited(item: Item, ctx: Context) -> dict[str, int]:
        starts.setdefault(item.id, []).append(time.monotonic())
        if ctx.attempt == 1:
            raise RetryAfter(0.4)
        return {"attempt": ctx.attempt}

    p = make(once_limited)
    batch = batchyard.run(["a", "b"], p, parallel=2, store=str(tmp_path / "s.db"))
    assert batch.status().items_succeeded == 2
    for first, second in starts.values():
        assert 0.4 <= second - first < 5  # not before the Retry-After, nowhere near the 100 s backoff
    assert all(r.status == "succeeded" and r.result == {"attempt": 2} for r in batch.results())
