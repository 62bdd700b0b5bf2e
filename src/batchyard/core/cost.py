"""Cost as a control: what an item is expected to cost, how many more fit a budget, and the projected total.

Pure functions over a batch's counters, shared by the stores (inside their claim transactions, where the
budget is enforced across every worker) and by ``BatchInfo`` (which reports estimated, spent and projected
totals). Costs are in the batch's ``cost_unit``.

The expected cost of one more item is the higher of the estimate's average per item and the actual average
so far: an estimate that proves too low must not let a batch overspend, and one that proves too high still
holds until actual costs come in above it. While nothing is known (no cost model, no item finished) a batch
with a budget runs one item at a time until the first actual cost tells what items cost.
"""

from __future__ import annotations

import math

# Budget arithmetic on floats: (1.0 - 0.7) / 0.1 is 2.9999999999999996, which must allow 3 items, not 2.
_EPSILON = 1e-9


def estimate_total(cost_estimated: float | None, cost_per_item: float | None, items_total: int) -> float | None:
    """The batch's estimated total: the stored one (a cost model's sum), else the fixed cost × items."""
    if cost_estimated is not None:
        return cost_estimated
    if cost_per_item:
        return cost_per_item * items_total
    return None


def per_item(estimated_total: float | None, items_total: int, spent: float, done: int) -> float | None:
    """What one more item is expected to cost; None while nothing is known about it.

    ``done``: items that reached an outcome (succeeded or failed), whose costs are in ``spent``.
    """
    estimate = estimated_total / items_total if estimated_total is not None and items_total else None
    actual = spent / done if done else None
    if estimate is None:
        return actual
    if actual is None:
        return estimate
    return max(estimate, actual)


def allowance(budget: float | None, spent: float, running: int, expected: float | None) -> int | None:
    """How many more items may start without the batch spending past its budget; None: no limit.

    Items already running count against the budget before they finish (``running × expected``), so that
    several workers claiming at once cannot together start more than the budget pays for.
    """
    if budget is None:
        return None
    if expected is None:  # unknown cost: one at a time, until an actual cost comes in
        return 1 if running == 0 and spent < budget else 0
    if expected <= 0:  # items cost nothing: only money already spent past the budget stops them
        return None if spent <= budget else 0
    room = budget - spent - running * expected
    return max(0, math.floor(room / expected + _EPSILON))


def budget_reached(budget: float | None, spent: float, pending: int, running: int, expected: float | None) -> bool:
    """Whether a running batch must pause (``budget_reached``): items wait, none is in flight, and not one
    more fits. While items are in flight the batch only stops claiming: they may cost less than expected."""
    return pending > 0 and running == 0 and allowance(budget, spent, 0, expected) == 0


def projected(spent: float, remaining: int, expected: float | None) -> float | None:
    """Spent so far plus the items not yet done at the expected cost each."""
    if remaining == 0:
        return spent
    if expected is None:
        return None
    return spent + remaining * expected
