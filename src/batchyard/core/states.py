"""The batch and item state machines: one table each, and the only place that decides a transition."""

from __future__ import annotations

from enum import StrEnum

from batchyard.core.errors import InvalidTransition


class BatchStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ItemStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PauseReason(StrEnum):
    USER = "user"
    BUDGET_REACHED = "budget_reached"
    RESOURCES = "resources"


B = BatchStatus
FINAL_BATCH = frozenset({B.COMPLETED, B.FAILED, B.CANCELLED})
FINAL_ITEM = frozenset({ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELLED})

# action -> (statuses it may start from, status it leads to)
BATCH_ACTIONS: dict[str, tuple[frozenset[BatchStatus], BatchStatus]] = {
    "start": (frozenset({B.PENDING}), B.RUNNING),
    "pause": (frozenset({B.RUNNING}), B.PAUSED),
    "resume": (frozenset({B.PAUSED}), B.RUNNING),
    "cancel": (frozenset({B.PENDING, B.RUNNING, B.PAUSED}), B.CANCELLING),
    "finish_cancel": (frozenset({B.CANCELLING}), B.CANCELLED),
    "complete": (frozenset({B.RUNNING}), B.COMPLETED),
    "fail": (frozenset({B.RUNNING}), B.FAILED),
    # the user retries failed items: the batch re-opens
    "retry": (frozenset({B.COMPLETED, B.FAILED}), B.RUNNING),
}

# What a user (CLI, API, REST) may ask for; the rest are the engine's own.
USER_ACTIONS = frozenset({"start", "pause", "resume", "cancel", "retry"})

# Item transitions, for documentation and for the stores' guarded writes.
ITEM_TRANSITIONS: dict[ItemStatus, frozenset[ItemStatus]] = {
    ItemStatus.PENDING: frozenset({ItemStatus.RUNNING, ItemStatus.CANCELLED}),
    ItemStatus.RUNNING: frozenset(
        {ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.PENDING, ItemStatus.CANCELLED}
    ),
    ItemStatus.FAILED: frozenset({ItemStatus.PENDING}),  # only by a user's retry
    ItemStatus.SUCCEEDED: frozenset(),
    ItemStatus.CANCELLED: frozenset(),
}

# Small integers are what the stores keep in the items table (it can hold millions of rows).
ITEM_CODE: dict[ItemStatus, int] = {
    ItemStatus.PENDING: 0,
    ItemStatus.RUNNING: 1,
    ItemStatus.SUCCEEDED: 2,
    ItemStatus.FAILED: 3,
    ItemStatus.CANCELLED: 4,
}
ITEM_FROM_CODE: dict[int, ItemStatus] = {v: k for k, v in ITEM_CODE.items()}


def allowed_from(action: str) -> frozenset[BatchStatus]:
    """Statuses ``action`` may start from; stores use this in guarded writes."""
    return BATCH_ACTIONS[action][0]


def apply(batch_id: str, current: str, action: str) -> BatchStatus:
    """Return the status ``action`` leads to from ``current``, or raise InvalidTransition."""
    if action not in BATCH_ACTIONS:
        raise ValueError(f"unknown batch action {action!r}")
    sources, target = BATCH_ACTIONS[action]
    if BatchStatus(current) not in sources:
        raise InvalidTransition("batch", batch_id, current, action)
    return target


def is_final(status: str) -> bool:
    return BatchStatus(status) in FINAL_BATCH


def settle(status: str, pending: int, running: int, failing: bool) -> str | None:
    """The action that ends a batch whose items are all final, if any.

    A running batch with nothing pending or leased is complete (or failed, if its failure policy
    tripped); a cancelling batch with nothing leased is cancelled.
    """
    if status == BatchStatus.CANCELLING and running == 0:
        return "finish_cancel"
    if status == BatchStatus.RUNNING and pending == 0 and running == 0:
        return "fail" if failing else "complete"
    return None
