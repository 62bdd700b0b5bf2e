"""Shared values: the failure policy and what a batch reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from batchyard.core.models import BatchInfo, BatchSpec, FailurePolicy, Priority, new_batch_id


@pytest.mark.parametrize(("policy", "failed", "total", "trips"), [
    (FailurePolicy(), 1000, 1000, False),
    (FailurePolicy(max_failures=0), 0, 10, False),
    (FailurePolicy(max_failures=0), 1, 10, True),
    (FailurePolicy(max_failures=3), 3, 10, False),
    (FailurePolicy(max_failures=3), 4, 10, True),
    (FailurePolicy(max_failure_rate=0.5), 5, 10, False),
    (FailurePolicy(max_failure_rate=0.5), 6, 10, True),
    (FailurePolicy(max_failure_rate=0.0), 1, 10_000, True),
    (FailurePolicy(max_failure_rate=1.0), 10, 10, False),
    (FailurePolicy(max_failure_rate=0.1), 0, 0, False),
    (FailurePolicy(max_failures=100, max_failure_rate=0.2), 3, 10, True),
])
def test_failure_policy(policy: FailurePolicy, failed: int, total: int, trips: bool) -> None:
    why = policy.tripped(failed, total)
    assert (why is not None) == trips
    if why:
        assert str(failed) in why and ("max_failures" in why or "max_failure_rate" in why)


@pytest.mark.parametrize("kwargs", [{"max_failures": -1}, {"max_failure_rate": 1.5}, {"max_failure_rate": -0.1}])
def test_failure_policy_bounds(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FailurePolicy(**kwargs)


def test_batch_spec_defaults_and_bounds() -> None:
    s = BatchSpec(processor="noop", tags=[" a", "", "b "])
    assert (s.parallel, s.priority, s.max_attempts, s.tenant, s.tags) == (8, Priority.NORMAL, 3, "default", ["a", "b"])
    for bad in ({"parallel": 0}, {"max_attempts": 0}, {"priority": "urgent"}):
        with pytest.raises(ValidationError):
            BatchSpec(processor="noop", **bad)


def info(**kw: Any) -> BatchInfo:
    now = datetime.now(UTC)
    base: dict[str, Any] = dict(
        batch_id="batch_1", tenant="default", processor="noop", status="running", priority="normal", parallel=8,
        params={}, failure_policy=FailurePolicy(), max_attempts=3, webhook=None, description=None, tags=[],
        source=None, fingerprint=None, items_total=10, items_pending=10, items_running=0, items_succeeded=0,
        items_failed=0, items_cancelled=0, attempts_total=0, cost_total=0.0, cost_unit="USD", created_at=now,
        started_at=now, completed_at=None, updated_at=now, active_seconds=0.0)
    base.update(kw)
    return BatchInfo(**base)


def test_progress_throughput_and_eta() -> None:
    b = info(items_pending=4, items_succeeded=5, items_failed=1, active_seconds=2.0)
    assert b.progress_percent == 60.0
    assert b.throughput_per_s == 3.0
    assert b.estimated_completion is not None
    eta = (b.estimated_completion - datetime.now(UTC)).total_seconds()
    assert 0.5 < eta < 2.0  # 4 left at 3/s
    assert b.counts.done == 6 and b.counts.total == 10 and not b.is_final


def test_empty_and_final_batches() -> None:
    assert info(items_total=0, items_pending=0).progress_percent == 100.0
    done_at = datetime(2025, 1, 1, tzinfo=UTC)
    b = info(status="completed", items_pending=0, items_succeeded=10, completed_at=done_at, active_seconds=5.0)
    assert b.is_final and b.estimated_completion == done_at and b.progress_percent == 100.0
    assert info(status="paused", items_pending=5, items_succeeded=5, active_seconds=1).estimated_completion is None


def test_batch_ids_are_unique() -> None:
    ids = {new_batch_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("batch_") for i in ids)
