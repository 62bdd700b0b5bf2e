"""The facade the CLI, the server and the Python API use: submit batches, run them, control them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from batchyard.core import defaults
from batchyard.core import processor as registry
from batchyard.core import sample as sample_mod
from batchyard.core.errors import InputError, InputProblem
from batchyard.core.models import BatchInfo, BatchSpec, Estimate, ItemInfo, NewItem
from batchyard.core.processor import Processor
from batchyard.core.states import BatchStatus, PauseReason
from batchyard.core.store import Store
from batchyard.core.throttle import Throttle
from batchyard.core.worker import Worker

Progress = Callable[[BatchInfo], None]
log = logging.getLogger("batchyard.engine")


class Engine:
    def __init__(self, store: Store, sources: Iterable[str] = ()) -> None:
        self.store = store
        self.sources = list(sources)
        registry.load(self.sources)

    # -- creating ------------------------------------------------------------------------------

    def processor(self, name: str) -> Processor:
        return registry.get(name)

    @staticmethod
    def check_params(proc: Processor, params: dict[str, Any]) -> dict[str, Any]:
        """Validate shared params alone, where the model allows it; return them JSON-ready."""
        if proc.params_model is None:
            return params
        try:
            proc.params_model.model_validate(params)
        except ValidationError as exc:
            # Required fields may come from each item instead; only report fields that were given.
            problems = [InputProblem(line=None, column=".".join(map(str, e["loc"])), reason=e["msg"])
                        for e in exc.errors() if e["type"] != "missing"]
            if problems:
                raise InputError(problems) from None
        return params

    def submit(self, spec: BatchSpec, items: Iterable[NewItem | tuple[str | None, Any]],
               start: bool = True) -> BatchInfo:
        proc = self.processor(spec.processor)
        self.check_params(proc, spec.params)
        if "max_attempts" not in spec.model_fields_set:
            spec = spec.model_copy(update={"max_attempts": proc.retry.max_attempts})
        if "cost_per_item" not in spec.model_fields_set and proc.cost_per_item:
            spec = spec.model_copy(update={"cost_per_item": proc.cost_per_item, "cost_unit": proc.cost_unit})
        if "cost_unit" not in spec.model_fields_set:  # costs a processor reports are in its unit
            spec = spec.model_copy(update={"cost_unit": proc.cost_unit})
        if proc.cost_model is not None and not spec.cost_per_item and spec.cost_estimated is None:
            items = self._priced(proc, spec, items)
        return self.store.create_batch(spec, items, start=start)

    @staticmethod
    def _priced(proc: Processor, spec: BatchSpec, items: Iterable[NewItem | tuple[str | None, Any]]
                ) -> Iterator[NewItem | tuple[str | None, Any]]:
        """The items as they stream into the store, totalling the cost model over them on the way: the total
        is on ``spec`` once the last item is read, which is when the store reads it (see BatchSpec)."""
        total = 0.0
        for it in items:
            try:
                total += proc.estimate_cost(it.payload if isinstance(it, NewItem) else it[1], spec.params)
            except Exception as exc:  # a model that cannot price an item leaves it out of the estimate
                log.warning("cost model of %s failed on an item: %s", proc.name, exc)
            yield it
        spec.cost_estimated = total

    # -- cost -----------------------------------------------------------------------------------

    def estimate(self, spec: BatchSpec, items: Iterable[NewItem | tuple[str | None, Any]], *, sample: int = 0,
                 seed: int | None = None, start: bool = False) -> Estimate:
        """The batch's count, cost and duration: from the cost model over every item (nothing is created), or,
        with ``sample``, by creating the batch and running that many random items of it for real.

        The sampled batch stays pending unless ``start``; running it (``start``, or ``batchyard run`` on the
        same input, which finds it) keeps the sample's outcomes and runs only the rest.
        """
        proc = self.processor(spec.processor)
        self.check_params(proc, spec.params)
        stats = self.store.processor_stats().get(proc.name)
        if sample <= 0:
            return sample_mod.by_model(proc, spec.params, items, spec.parallel, stats)
        info = self.submit(spec, items, start=False)
        return self.sample_batch(info.batch_id, sample, seed=seed, start=start)

    def sample_batch(self, batch_id: str, sample: int, *, seed: int | None = None, start: bool = False) -> Estimate:
        """Run ``sample`` random pending items of an unfinished batch for real; extrapolate to all of it."""
        info = self.store.get_batch(batch_id)
        proc = self.processor(info.processor)
        report = sample_mod.run_sample(self.store, proc, batch_id, sample, info.parallel, seed=seed)
        if start and self.store.get_batch(batch_id).status == BatchStatus.PENDING:
            self.start(batch_id)
        return sample_mod.extrapolate(proc, info.items_total, info.parallel, report, info.cost_estimated, batch_id)

    def set_budget(self, batch_id: str, budget: float | None, *, resume: bool = True) -> BatchInfo:
        """Set the batch's budget; with ``resume``, a batch paused because it reached its budget runs again
        (and pauses again at once if not even one more item fits the new budget)."""
        info = self.store.set_budget(batch_id, budget)
        if resume and info.status == BatchStatus.PAUSED and info.pause_reason == PauseReason.BUDGET_REACHED:
            info = self.store.transition(batch_id, "resume")
        return info

    # -- running -------------------------------------------------------------------------------

    def run(self, batch_id: str, *, on_progress: Progress | None = None, interval: float = 0.05,
            should_stop: Callable[[], bool] | None = None, grace: float = defaults.GRACE_SECONDS,
            lease_seconds: float = defaults.LEASE_SECONDS, throttle: Throttle | None = None) -> BatchInfo:
        """Run one batch in this process until it ends, reaches its budget, or ``should_stop`` says so; return
        its status."""
        info = self.store.get_batch(batch_id)
        proc = self.processor(info.processor)
        worker = Worker(self.store, [proc], concurrency=info.parallel, sources=self.sources,
                        only={batch_id}, lease_seconds=lease_seconds, throttle=throttle)
        worker.start()
        try:
            while True:
                info = self.store.get_batch(batch_id)
                if on_progress:
                    on_progress(info)
                # A batch paused at its budget waits for someone to raise it: not for this process.
                at_budget = info.status == BatchStatus.PAUSED and info.pause_reason == PauseReason.BUDGET_REACHED
                if info.is_final or at_budget or (should_stop and should_stop()) or not worker.alive:
                    break
                time.sleep(interval)
        finally:
            worker.stop(grace=grace)
        info = self.store.get_batch(batch_id)
        if on_progress:
            on_progress(info)
        return info

    # -- controlling and reading ---------------------------------------------------------------

    def status(self, batch_id: str) -> BatchInfo:
        return self.store.get_batch(batch_id)

    def latest(self) -> BatchInfo | None:
        found = self.store.list_batches(limit=1)
        return found[0] if found else None

    def start(self, batch_id: str) -> BatchInfo:
        return self.store.transition(batch_id, "start")

    def pause(self, batch_id: str, reason: str = "user") -> BatchInfo:
        return self.store.transition(batch_id, "pause", reason)

    def resume(self, batch_id: str, budget: float | None = None) -> BatchInfo:
        """Resume a paused batch; ``budget`` first raises (or sets) its budget."""
        if budget is not None:
            self.store.set_budget(batch_id, budget)
        return self.store.transition(batch_id, "resume")

    def cancel(self, batch_id: str) -> BatchInfo:
        return self.store.transition(batch_id, "cancel")

    def retry(self, batch_id: str) -> BatchInfo:
        return self.store.transition(batch_id, "retry")

    def items(self, batch_id: str, status: str | None = None) -> Iterator[ItemInfo]:
        return self.store.iter_items(batch_id, status=status)

    def list(self, **filters: Any) -> list[BatchInfo]:
        return self.store.list_batches(**filters)

    def cleanup(self, days_old: float) -> list[str]:
        return self.store.cleanup(time.time() - days_old * 86400)
