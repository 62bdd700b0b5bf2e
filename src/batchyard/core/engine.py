"""The facade the CLI, the server and the Python API use: submit batches, run them, control them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from batchyard.core import defaults
from batchyard.core import processor as registry
from batchyard.core.errors import InputError, InputProblem
from batchyard.core.models import BatchInfo, BatchSpec, ItemInfo, NewItem
from batchyard.core.processor import Processor
from batchyard.core.store import Store
from batchyard.core.worker import Worker

Progress = Callable[[BatchInfo], None]


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
        return self.store.create_batch(spec, items, start=start)

    # -- running -------------------------------------------------------------------------------

    def run(self, batch_id: str, *, on_progress: Progress | None = None, interval: float = 0.05,
            should_stop: Callable[[], bool] | None = None, grace: float = defaults.GRACE_SECONDS,
            lease_seconds: float = defaults.LEASE_SECONDS) -> BatchInfo:
        """Run one batch in this process until it ends (or ``should_stop`` says so); return its status."""
        info = self.store.get_batch(batch_id)
        proc = self.processor(info.processor)
        worker = Worker(self.store, [proc], concurrency=info.parallel, sources=self.sources,
                        only={batch_id}, lease_seconds=lease_seconds)
        worker.start()
        try:
            while True:
                info = self.store.get_batch(batch_id)
                if on_progress:
                    on_progress(info)
                if info.is_final or (should_stop and should_stop()) or not worker.alive:
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

    def resume(self, batch_id: str) -> BatchInfo:
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
