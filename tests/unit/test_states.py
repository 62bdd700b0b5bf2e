"""The batch state table, checked against the table in DESIGN.md written out by hand."""

from __future__ import annotations

import itertools

import pytest

from batchyard.core import states
from batchyard.core.errors import InvalidTransition
from batchyard.core.states import (
    FINAL_BATCH,
    FINAL_ITEM,
    ITEM_CODE,
    ITEM_FROM_CODE,
    ITEM_TRANSITIONS,
    BatchStatus,
    ItemStatus,
)

ALL = ["pending", "running", "paused", "cancelling", "completed", "failed", "cancelled"]
ACTIONS = ["start", "pause", "resume", "cancel", "finish_cancel", "complete", "fail", "retry"]

# (action, from) -> to; every pair not listed must be refused
ALLOWED = {
    ("start", "pending"): "running",
    ("pause", "running"): "paused",
    ("resume", "paused"): "running",
    ("cancel", "pending"): "cancelling",
    ("cancel", "running"): "cancelling",
    ("cancel", "paused"): "cancelling",
    ("finish_cancel", "cancelling"): "cancelled",
    ("complete", "running"): "completed",
    ("fail", "running"): "failed",
    ("retry", "completed"): "running",
    ("retry", "failed"): "running",
}


def test_the_vocabulary() -> None:
    assert [s.value for s in BatchStatus] == ALL
    assert sorted(states.BATCH_ACTIONS) == sorted(ACTIONS)
    assert {s.value for s in FINAL_BATCH} == {"completed", "failed", "cancelled"}
    assert {s.value for s in FINAL_ITEM} == {"succeeded", "failed", "cancelled"}
    assert [r.value for r in states.PauseReason] == ["user", "budget_reached", "resources"]


@pytest.mark.parametrize(("action", "current"), list(itertools.product(ACTIONS, ALL)))
def test_every_action_from_every_status(action: str, current: str) -> None:
    expected = ALLOWED.get((action, current))
    if expected is None:
        with pytest.raises(InvalidTransition) as exc:
            states.apply("b1", current, action)
        assert (exc.value.kind, exc.value.ident, exc.value.current, exc.value.action) == \
            ("batch", "b1", current, action)
        assert f"cannot {action} batch b1: it is {current}" == str(exc.value)
        assert BatchStatus(current) not in states.allowed_from(action)
    else:
        assert states.apply("b1", current, action) == expected
        assert BatchStatus(current) in states.allowed_from(action)


def test_final_statuses_have_no_way_out_but_retry() -> None:
    for current, action in itertools.product(FINAL_BATCH, ACTIONS):
        if (action, current.value) in ALLOWED:
            assert action == "retry"


def test_unknown_action_and_status() -> None:
    with pytest.raises(ValueError, match="unknown batch action"):
        states.apply("b1", "running", "explode")
    with pytest.raises(ValueError):
        states.apply("b1", "sleeping", "pause")


@pytest.mark.parametrize("status", ALL)
def test_is_final(status: str) -> None:
    assert states.is_final(status) == (status in {"completed", "failed", "cancelled"})


def test_item_transitions() -> None:
    t = {k.value: {v.value for v in vs} for k, vs in ITEM_TRANSITIONS.items()}
    assert t == {
        "pending": {"running", "cancelled"},
        "running": {"succeeded", "failed", "pending", "cancelled"},
        "failed": {"pending"},
        "succeeded": set(),
        "cancelled": set(),
    }


def test_item_codes_match_the_schema() -> None:
    # 001_init.sql: 0 pending, 1 running, 2 succeeded, 3 failed, 4 cancelled
    assert {k.value: v for k, v in ITEM_CODE.items()} == {
        "pending": 0, "running": 1, "succeeded": 2, "failed": 3, "cancelled": 4}
    assert all(ITEM_FROM_CODE[ITEM_CODE[s]] is s for s in ItemStatus)


@pytest.mark.parametrize(("status", "pending", "running", "failing", "expected"), [
    ("running", 0, 0, False, "complete"),
    ("running", 0, 0, True, "fail"),
    ("running", 1, 0, False, None),
    ("running", 0, 1, False, None),
    ("running", 0, 1, True, None),
    ("running", 5, 3, True, None),
    ("cancelling", 0, 0, False, "finish_cancel"),
    ("cancelling", 0, 2, False, None),
    ("cancelling", 0, 0, True, "finish_cancel"),
    ("paused", 0, 0, False, None),
    ("paused", 0, 0, True, None),
    ("pending", 0, 0, False, None),
    ("completed", 0, 0, False, None),
    ("failed", 0, 0, True, None),
    ("cancelled", 0, 0, False, None),
])
def test_settle(status: str, pending: int, running: int, failing: bool, expected: str | None) -> None:
    action = states.settle(status, pending, running, failing)
    assert action == expected
    if action is not None:  # whatever settle asks for, the table allows
        states.apply("b1", status, action)
