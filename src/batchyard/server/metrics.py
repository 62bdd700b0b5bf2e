"""Prometheus metrics read from the store's counters at scrape time.

The store is the single source of truth, and items may run in other processes, so the numbers come
from the batch rows (O(batches), cached for a second), not from counters kept in this process. Items
of deleted batches drop out of the totals, which Prometheus sees as a counter reset.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from batchyard.core.store import Store

PAGE = 1000
CACHE_SECONDS = 1.0


class StoreCollector(Collector):
    def __init__(self, store: Store, tenant: str | None = None) -> None:
        self.store = store
        self.tenant = tenant
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > CACHE_SECONDS:
                self._cached = (time.monotonic(), self._read())
            return iter(self._cached[1])

    def _read(self) -> list[Metric]:
        succeeded: dict[str, int] = defaultdict(int)
        failed: dict[str, int] = defaultdict(int)
        queued: dict[str, int] = defaultdict(int)
        running: dict[str, int] = defaultdict(int)
        seconds: dict[str, float] = defaultdict(float)
        by_status: dict[str, int] = defaultdict(int)
        before = None
        while True:
            page = self.store.list_batches(limit=PAGE, before=before, tenant=self.tenant)
            for b in page:
                succeeded[b.processor] += b.items_succeeded
                failed[b.processor] += b.items_failed
                seconds[b.processor] += b.active_seconds
                by_status[b.status.value] += 1
                if not b.is_final:
                    queued[b.processor] += b.items_pending
                    running[b.processor] += b.items_running
            if len(page) < PAGE:
                break
            before = page[-1].batch_id
        processed = CounterMetricFamily("batchyard_items_processed", "Items that reached succeeded or failed.",
                                        labels=["processor"])
        failures = CounterMetricFamily("batchyard_items_failed", "Items that failed (after their retries).",
                                       labels=["processor"])
        active = CounterMetricFamily("batchyard_batch_active_seconds", "Seconds batches spent running.",
                                     labels=["processor"])
        depth = GaugeMetricFamily("batchyard_queue_depth", "Items pending in batches not yet final.",
                                  labels=["processor"])
        inflight = GaugeMetricFamily("batchyard_items_running", "Items leased by a worker right now.",
                                     labels=["processor"])
        batches = GaugeMetricFamily("batchyard_batches", "Batches in the store by status.", labels=["status"])
        for name in sorted(set(succeeded) | set(queued)):
            processed.add_metric([name], succeeded[name] + failed[name])
            failures.add_metric([name], failed[name])
            active.add_metric([name], seconds[name])
            depth.add_metric([name], queued[name])
            inflight.add_metric([name], running[name])
        for status, n in sorted(by_status.items()):
            batches.add_metric([status], n)
        workers = GaugeMetricFamily("batchyard_workers", "Workers registered on the store.",
                                    value=len(self.store.list_workers()))
        return [processed, failures, active, depth, inflight, batches, workers]


def registry_for(store: Store, tenant: str | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, tenant))
    return registry
