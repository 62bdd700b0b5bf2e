"""Resource-aware workers: past a memory, disk or CPU threshold a worker claims nothing and the batches it serves
say why; back under (thresholds raised here), it goes on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import batchyard
from batchyard.core.models import BatchSpec, NewItem
from batchyard.core.processor import Context, Item
from batchyard.core.throttle import Thresholds, Throttle, reason
from batchyard.core.worker import Worker
from batchyard.store.sqlite import SQLiteStore


def test_reasons_name_the_measure_and_the_threshold(tmp_path: Path) -> None:
    assert reason(Thresholds()) is None
    assert reason(Thresholds(max_memory_percent=100, min_disk_free_gb=0, max_cpu_percent=100)) is None
    why = reason(Thresholds(max_memory_percent=0.01))
    assert why is not None and why.startswith("throttled: memory ") and why.endswith("% > 0.01%")
    huge = psutil.disk_usage(str(tmp_path)).total / 1e9 * 10
    why = reason(Thresholds(min_disk_free_gb=huge, disk_path=str(tmp_path)))
    assert why is not None and f"GB < {huge:g} GB on {tmp_path}" in why


def test_thresholds_file_is_read_over_the_options_when_it_changes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "thresholds.json"
    f.write_text(json.dumps({"max_memory_percent": 0.01}))
    t = Throttle(Thresholds(max_cpu_percent=100), f)
    assert (t.reason() or "").startswith("throttled: memory")
    f.write_text(json.dumps({"max_memory_percent": 100.0}))
    monkeypatch.setattr(t, "_next", 0.0)  # not a second later: look again now
    assert t.reason() is None and t.thresholds == Thresholds(max_memory_percent=100.0, max_cpu_percent=100)
    f.write_text("{not json")
    monkeypatch.setattr(t, "_next", 0.0)
    assert t.reason() is None  # a broken file leaves the thresholds in force
    monkeypatch.setenv("BATCHYARD_MAX_MEMORY_PERCENT", "42")
    assert Throttle.from_env() is not None and Throttle.from_env().thresholds.max_memory_percent == 42.0  # type: ignore[union-attr]
    monkeypatch.delenv("BATCHYARD_MAX_MEMORY_PERCENT")
    assert Throttle.from_env() is None


def test_a_worker_over_its_thresholds_stops_claiming_and_goes_on_once_under(tmp_path: Path) -> None:
    ran: list[Any] = []

    @batchyard.processor("throttled-items")
    def run(item: Item, ctx: Context) -> dict[str, Any]:
        ran.append(item.payload)
        return {}

    store = SQLiteStore(tmp_path / "t.db")
    info = store.create_batch(BatchSpec(processor=run.name), [NewItem(payload=i) for i in range(20)])
    f = tmp_path / "thresholds.json"
    f.write_text(json.dumps({"max_memory_percent": 0.01}))  # always past it
    w = Worker(store, [run], concurrency=4, throttle=Throttle(file=f))
    w.start()
    try:
        deadline = time.monotonic() + 10
        while not store.get_batch(info.batch_id).throttled:
            assert time.monotonic() < deadline, "no throttle note"
            time.sleep(0.05)
        time.sleep(1.0)
        now = store.get_batch(info.batch_id)
        assert ran == [] and now.items_pending == 20 and now.status == "running"
        assert now.throttled is not None and now.throttled.startswith("throttled: memory ")
        f.write_text(json.dumps({"max_memory_percent": 100}))  # raised: under it again
        while not (done := store.get_batch(info.batch_id)).is_final:
            assert time.monotonic() < deadline + 10, "never resumed"
            time.sleep(0.05)
    finally:
        w.stop()
    assert done.status == "completed" and sorted(ran) == list(range(20))
    assert done.throttled is None
