"""``serve --workers 0`` with a separate ``batchyard worker`` process on the same SQLite store."""

from __future__ import annotations

import io
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _serve_support import PROCS, Proc, Server, wait_for

from batchyard import Client
from batchyard.store.sqlite import SQLiteStore


def test_api_only_server_with_a_separate_worker(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server("--workers", "0")
    with Client(s.url) as c:
        assert c.health().workers == [] and c.health().embedded_workers == 0
        b = c.create_batch("slow", list(range(30)), params={"ms": 20}, parallel_jobs=4)
        assert c.get_batch(b.batch_id).items_succeeded == 0

        w = Proc(["worker", "--store", str(s.store), "--processors", str(PROCS), "--concurrency", "4",
                  "--name", "side-worker"], tmp_path / "worker.log")
        try:
            wait_for(lambda: any(x.name == "side-worker" for x in c.health().workers), timeout=10)
            seen: list[tuple[str, int]] = []
            final = c.wait(b.batch_id, on_progress=lambda i: seen.append((i.status, i.items_succeeded)), timeout=15)
            assert final.status == "completed" and final.items_succeeded == 30
            assert len(seen) >= 2 and seen[-1] == ("completed", 30)
            assert [n for _, n in seen] == sorted(n for _, n in seen)
            metrics = c.metrics()
            assert 'batchyard_items_processed_total{processor="slow"} 30.0' in metrics

            # the worker stops gracefully on SIGTERM, exits 0 and unregisters
            w.signal(signal.SIGTERM)
            assert w.wait(15) == 0, w.output()
            assert c.health().workers == []
        finally:
            w.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_restarted_server_finishes_an_interrupted_batch(start_server: Callable[..., Server], tmp_path: Path,
                                                          sig: int) -> None:
    store = tmp_path / "store.db"
    s = start_server("--workers", "4", store=store)
    with Client(s.url) as c:
        b = c.create_batch("slow", list(range(80)), params={"ms": 25}, parallel_jobs=4)
        wait_for(lambda: c.get_batch(b.batch_id).items_succeeded >= 8)
    s.signal(sig)
    code = s.wait(15)
    if sig == signal.SIGTERM:  # graceful: uvicorn re-raises the signal after the lifespan shut the worker down
        assert code in (0, -signal.SIGTERM), s.output()
        st = SQLiteStore(store)
        try:
            assert st.list_workers() == [] and st.get_batch(b.batch_id).items_running == 0
        finally:
            st.close()
    else:
        assert code == -signal.SIGKILL
    s2 = start_server("--workers", "4", store=store)
    with Client(s2.url) as c:
        final = c.wait(b.batch_id, timeout=15)
        assert final.status == "completed" and final.items_succeeded == 80 and final.items_failed == 0
        assert sorted(it.payload for it in c.iter_items(b.batch_id)) == list(range(80))
        assert c.health().workers and all(w.pid != s.p.pid for w in c.health().workers)


def test_results_stream_without_leaking_threads_connections_or_memory(start_server: Callable[..., Server]) -> None:
    import psutil

    s = start_server("--workers", "8", "--max-upload-mb", "8")
    lines = "".join(f"item-{i:07d}-{'x' * 40}\n" for i in range(50_000)).encode()
    with Client(s.url, timeout=60) as c:
        b = c.upload(io.BytesIO(lines), "noop", filename="many.txt", parallel_jobs=8)
        assert c.wait(b.batch_id, timeout=120).items_succeeded == 50_000
    proc = psutil.Process(s.p.pid)

    def export() -> tuple[int, int]:
        size, peak = 0, proc.memory_info().rss
        with httpx.stream("GET", f"{s.url}/api/v1/batches/{b.batch_id}/results", params={"format": "jsonl"},
                          timeout=60) as r:
            assert r.status_code == 200 and "content-length" not in r.headers  # streamed, not buffered
            for chunk in r.iter_bytes():
                size += len(chunk)
                peak = max(peak, proc.memory_info().rss)
        return size, peak

    export()  # warms the export thread's store connection (idle threads are reused)
    threads, fds, rss = proc.num_threads(), proc.num_fds(), proc.memory_info().rss
    size, peak = export()
    assert size > 7_000_000
    assert peak - rss < size / 2, f"server grew {(peak - rss) / 1e6:.1f} MB exporting {size / 1e6:.0f} MB"
    for _ in range(4):
        export()
    # A leak grows with every export; a thread or socket the server opens once on its own does not.
    assert proc.num_threads() <= threads + 2 and proc.num_fds() <= fds + 2
