"""Prometheus metrics read from the store at scrape time (cached for a second).

The store is the single source of truth and items may run in other processes, so nothing is counted
in this process: item totals and the duration histogram come from the per-processor statistics the
stores write with each group commit (monotonic: deleting batches does not lower them), and the queue
gauges from the unfinished batches' O(1) counters. Server-wide, over every tenant.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from batchyard.core import defaults
from batchyard.core.states import BatchStatus
from batchyard.core.store import Store

PAGE = 1000
CACHE_SECONDS = 1.0
UNFINISHED = (BatchStatus.PENDING, BatchStatus.RUNNING, BatchStatus.PAUSED, BatchStatus.CANCELLING)


class StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > CACHE_SECONDS:
                self._cached = (time.monotonic(), self._totals() + self._gauges())
            return iter(self._cached[1])

    def _totals(self) -> list[Metric]:
        processed = CounterMetricFamily("batchyard_items_processed", "Items that reached succeeded or failed.",
                                        labels=["processor"])
        failed = CounterMetricFamily("batchyard_items_failed", "Items that failed (after their retries).",
                                     labels=["processor"])
        retried = CounterMetricFamily("batchyard_item_retries", "Attempts that failed and were retried.",
                                      labels=["processor"])
        durations = HistogramMetricFamily("batchyard_item_duration_seconds",
                                          "Time an item's final attempt took.", labels=["processor"])
        bounds = [*map(str, defaults.DURATION_BUCKETS), "+Inf"]
        for name, st in sorted(self.store.processor_stats().items()):
            processed.add_metric([name], st.succeeded + st.failed)
            failed.add_metric([name], st.failed)
            retried.add_metric([name], st.retried)
            if len(st.buckets) == len(bounds):
                cumulative, total = [], 0
                for bound, n in zip(bounds, st.buckets, strict=True):
                    total += n
                    cumulative.append((bound, total))
                durations.add_metric([name], cumulative, st.duration_sum)
        return [processed, failed, retried, durations]

    def _gauges(self) -> list[Metric]:
        queued: dict[str, int] = defaultdict(int)
        running: dict[str, int] = defaultdict(int)
        batches = GaugeMetricFamily("batchyard_batches", "Unfinished batches by status.", labels=["status"])
        for status in UNFINISHED:
            count, before = 0, None
            while True:
                page = self.store.list_batches(status=status.value, limit=PAGE, before=before)
                for b in page:
                    queued[b.processor] += b.items_pending
                    running[b.processor] += b.items_running
                count += len(page)
                if len(page) < PAGE:
                    break
                before = page[-1].batch_id
            batches.add_metric([status.value], count)
        depth = GaugeMetricFamily("batchyard_queue_depth", "Items pending in unfinished batches.",
                                  labels=["processor"])
        inflight = GaugeMetricFamily("batchyard_items_running", "Items leased by a worker right now.",
                                     labels=["processor"])
        for name in sorted(queued):
            depth.add_metric([name], queued[name])
            inflight.add_metric([name], running[name])
        workers = GaugeMetricFamily("batchyard_workers", "Workers registered on the store.",
                                    value=len(self.store.list_workers()))
        return [depth, inflight, batches, workers]


def registry_for(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry
