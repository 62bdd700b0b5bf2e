"""Cost as a control: cost models, expected costs, budget allowances, projections, estimates by model and sample."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import batchyard
from batchyard.core import cost
from batchyard.core.engine import Engine
from batchyard.core.models import BatchSpec, NewItem
from batchyard.core.processor import Context, Item
from batchyard.io.outputs import summary
from batchyard.store.sqlite import SQLiteStore

RAN: list[Any] = []
_lock = threading.Lock()


@batchyard.processor("cost-by-size", cost_per_item=lambda item: item.payload["size"] * 0.01, cost_unit="EUR")
def by_size(item: Item, ctx: Context) -> dict[str, Any]:
    with _lock:
        RAN.append(item.payload["n"])
    return {"n": item.payload["n"]}


@batchyard.processor("cost-reported", cost_unit="tokens")
def reported(item: Item, ctx: Context) -> dict[str, Any]:
    with _lock:
        RAN.append(item.payload["n"])
    ctx.report_cost(item.payload["n"] % 3 + 1)
    return {}


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    RAN.clear()
    e = Engine(SQLiteStore(tmp_path / "cost.db"))
    yield e
    e.store.close()


def sized(n: int) -> list[NewItem]:
    return [NewItem(payload={"n": i, "size": 100 * (i % 4 + 1)}) for i in range(n)]


# -- pure arithmetic ------------------------------------------------------------------------------


def test_expected_cost_is_the_higher_of_estimate_and_actual() -> None:
    assert cost.per_item(None, 10, 0.0, 0) is None  # nothing known
    assert cost.per_item(5.0, 10, 0.0, 0) == 0.5  # the estimate alone
    assert cost.per_item(None, 10, 3.0, 2) == 1.5  # actuals alone
    assert cost.per_item(5.0, 10, 3.0, 2) == 1.5  # actuals above the estimate win
    assert cost.per_item(50.0, 10, 3.0, 2) == 5.0  # an estimate above actuals holds


def test_allowance_counts_items_in_flight_and_rounds_safely() -> None:
    assert cost.allowance(None, 100.0, 5, 1.0) is None
    assert cost.allowance(1.0, 0.7, 0, 0.1) == 3  # not 2 (float arithmetic)
    assert cost.allowance(10.0, 2.0, 3, 1.0) == 5
    assert cost.allowance(10.0, 2.0, 9, 1.0) == 0
    assert cost.allowance(1.0, 0.0, 0, None) == 1 and cost.allowance(1.0, 0.0, 1, None) == 0  # unknown: one at a time
    assert cost.allowance(1.0, 0.0, 7, 0.0) is None and cost.allowance(1.0, 1.5, 0, 0.0) == 0  # free items


def test_budget_is_reached_only_with_nothing_in_flight() -> None:
    assert cost.budget_reached(2.0, 1.5, 10, 0, 1.0)
    assert not cost.budget_reached(2.0, 1.5, 10, 1, 1.0)  # the item in flight may cost less
    assert not cost.budget_reached(2.0, 1.5, 0, 0, 1.0)  # nothing left: it completes instead
    assert not cost.budget_reached(2.0, 1.0, 10, 0, 1.0)


def test_projection() -> None:
    assert cost.projected(4.0, 0, None) == 4.0
    assert cost.projected(4.0, 6, None) is None
    assert cost.projected(4.0, 6, 0.5) == 7.0


# -- processors and batches -----------------------------------------------------------------------


def test_cost_model_prices_each_item_and_is_described() -> None:
    proc = batchyard.core.processor.get("cost-by-size")
    assert proc.cost_model is not None and proc.cost_per_item == 0.0
    assert proc.estimate_cost({"n": 1, "size": 300}, {}) == pytest.approx(3.0)
    assert proc.describe()["cost_model"] is True


def test_submit_totals_the_cost_model_and_the_batch_reports_spent_and_projected(engine: Engine) -> None:
    info = engine.submit(BatchSpec(processor="cost-by-size"), sized(8))
    # sizes 100, 200, 300, 400 twice: (1 + 2 + 3 + 4) * 2 = 20 EUR
    assert (info.cost_estimated, info.cost_unit, info.cost_projected) == (pytest.approx(20.0), "EUR",
                                                                         pytest.approx(20.0))
    done = engine.run(info.batch_id)
    assert done.status == "completed"
    assert done.cost_total == pytest.approx(20.0)  # unreported costs are the model's, item by item
    assert done.cost_projected == pytest.approx(20.0)
    costs = sorted(round(i.cost or 0, 6) for i in engine.items(info.batch_id))
    assert costs == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    s = summary(done)  # the results' summary carries the three totals too
    assert (s["cost"], s["cost_estimated"], s["cost_projected"], s["cost_unit"]) == (20.0, 20.0, 20.0, "EUR")


def test_budget_pauses_the_run_and_raising_it_continues(engine: Engine) -> None:
    info = engine.submit(BatchSpec(processor="cost-by-size", budget=7.5, parallel=4), sized(20))
    first = engine.run(info.batch_id)
    assert (first.status, first.pause_reason) == ("paused", "budget_reached")
    assert first.cost_total <= 7.5 + 1e-9
    assert first.items_running == 0 and first.items_pending > 0
    raised = engine.set_budget(info.batch_id, 1000.0)  # a batch paused at its budget continues
    assert raised.status == "running"
    end = engine.run(info.batch_id)
    assert (end.status, end.items_succeeded) == ("completed", 20)
    assert sorted(RAN) == list(range(20))  # nothing ran twice


def test_estimate_by_model_creates_nothing(engine: Engine) -> None:
    est = engine.estimate(BatchSpec(processor="cost-by-size", parallel=4), sized(12))
    assert (est.method, est.items, est.cost_unit, est.batch_id) == ("model", 12, "EUR", None)
    assert est.cost_estimated == pytest.approx(30.0) and est.cost_per_item == pytest.approx(2.5)
    assert est.duration_s is None  # the processor never ran here: no time to go by
    assert engine.list() == [] and RAN == []


def test_estimate_by_sample_runs_it_for_real_and_the_batch_keeps_it(engine: Engine) -> None:
    est = engine.estimate(BatchSpec(processor="cost-reported", parallel=4), sized(30), sample=6, seed=7)
    assert (est.method, est.items, est.sample.size, est.sample.succeeded) == ("sample", 30, 6, 6)
    sampled = sorted(RAN)
    assert len(sampled) == 6
    assert est.sample.cost == sum(n % 3 + 1 for n in sampled)
    assert est.cost_estimated == pytest.approx(est.sample.cost / 6 * 30)
    assert est.cost_model_total is None and est.duration_s is not None
    info = engine.status(est.batch_id)
    assert (info.status, info.items_succeeded, info.cost_total) == ("pending", 6, est.sample.cost)
    engine.start(est.batch_id)
    end = engine.run(est.batch_id)
    assert (end.status, end.items_succeeded, end.attempts_total) == ("completed", 30, 30)
    assert sorted(RAN) == list(range(30))  # the sample's items were not run again
