"""Health, metrics, processors (unsafe ones hidden), OpenAPI completeness, recovery, cleanup and retention."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _serve_support import PROCS, Proc, Server, wait_for

from batchyard import Client
from batchyard.client import ForbiddenError


def test_health(client: Client) -> None:
    h = client.health()
    assert h.status == "ok" and h.store.ok and h.version
    assert h.embedded_workers == 4 and h.workers_alive >= 1
    assert any(w.name.startswith("serve:") and "slow" in w.processors for w in h.workers)


def test_metrics(client: Client) -> None:
    b = client.create_batch("sync-analyze", [{"master_file": "/m/fail", "dub_file": "/d"},
                                             {"master_file": "/m/ok", "dub_file": "/d"}])
    client.wait(b.batch_id, timeout=10)
    text = client.metrics()
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line and not line.startswith("#")}
    assert lines['batchyard_items_processed_total{processor="sync-analyze"}'] >= 2
    assert lines['batchyard_items_failed_total{processor="sync-analyze"}'] >= 1
    assert lines['batchyard_item_duration_seconds_count{processor="sync-analyze"}'] >= 2
    assert lines['batchyard_item_duration_seconds_bucket{le="+Inf",processor="sync-analyze"}'] >= 2
    assert lines['batchyard_item_duration_seconds_sum{processor="sync-analyze"}'] >= 0
    assert lines["batchyard_workers"] >= 1
    assert "# TYPE batchyard_items_processed_total counter" in text
    assert "# TYPE batchyard_item_duration_seconds histogram" in text
    # the totals are monotonic: deleting the batch does not lower them
    client.delete_batch(b.batch_id)
    time.sleep(1.1)  # the scrape is cached for a second
    after = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in client.metrics().splitlines()
             if line and not line.startswith("#")}
    key = 'batchyard_items_processed_total{processor="sync-analyze"}'
    assert after[key] >= lines[key]


def test_metrics_queue_depth(client: Client) -> None:
    b = client.create_batch("slow", [1, 2, 3], start=False)
    time.sleep(1.1)
    text = client.metrics()
    assert 'batchyard_queue_depth{processor="slow"}' in text and 'batchyard_batches{status="pending"}' in text
    client.cancel(b.batch_id)


def test_unsafe_processors_are_hidden_and_refused(http: httpx.Client, client: Client) -> None:
    names = [p.name for p in client.processors()]
    assert {"noop", "slow", "sync-analyze"} <= set(names) and "shell" not in names
    schema = next(p for p in client.processors() if p.name == "sync-analyze").params_schema
    assert schema is not None and "master_file" in schema["required"]
    r = http.post("/batches", json={"processor": "shell", "items": ["echo hi"], "params": {"command": "echo {}"}})
    assert r.status_code == 403 and r.json()["error"]["code"] == "processor_not_allowed"
    assert "--allow-unsafe-processors" in r.json()["error"]["message"]
    with pytest.raises(ForbiddenError):
        client.validate("shell", ["x"])


def test_unsafe_processors_with_the_flag(start_server: Callable[..., Server]) -> None:
    s = start_server("--allow-unsafe-processors", "--workers", "1")
    with Client(s.url) as c:
        assert "shell" in [p.name for p in c.processors()]


def test_local_input_uri_needs_a_data_root(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server("--workers", "0")
    (tmp_path / "x.txt").write_text("a\n")
    with Client(s.url) as c, pytest.raises(ForbiddenError) as exc:
        c.create_batch("noop", input_uri=str(tmp_path / "x.txt"))
    assert exc.value.code == "path_not_allowed"


def test_openapi_is_complete(server: Server) -> None:
    """Every operation has a summary, a success response and the errors it can give (the client's
    coverage of the operations is test_client_coverage's)."""
    spec = httpx.get(server.url + "/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op.get("summary"), (method, path)
            assert "200" in op["responses"] or "201" in op["responses"] or "204" in op["responses"]
            if "{batch_id}" in path:
                assert "404" in op["responses"], (method, path)
            if path.endswith(("/pause", "/resume", "/cancel", "/retry", "/start")) or method == "delete":
                assert "409" in op["responses"], (method, path)
    schemas = spec["components"]["schemas"]
    assert {"Batch", "ErrorResponse", "ItemInfo", "ValidationReport", "BatchEvent"} <= set(schemas)
    assert httpx.get(server.url + "/docs").status_code == 200


def test_client_imports_without_fastapi() -> None:
    code = ("import sys\nfor m in ('fastapi', 'starlette', 'uvicorn', 'sse_starlette'): sys.modules[m] = None\n"
            "import batchyard\nfrom batchyard import Client, AsyncClient\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "ok", r.stderr


def test_recover_cleanup_and_retention(start_server: Callable[..., Server], tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    s = start_server("--workers", "2", store=store)
    with Client(s.url) as c:
        assert c.recover().recovered == 0
        done = c.create_batch("noop", [1, 2])
        c.wait(done.batch_id, timeout=10)
        pending = c.create_batch("noop", [1], start=False)
        assert c.cleanup(days_old=30).count == 0
    s.stop()
    # restarted with --retention-days 0: the final batch goes at start-up, the pending one stays
    s2 = start_server("--workers", "0", "--retention-days", "0", store=store)
    with Client(s2.url) as c:
        ids = {b.batch_id for b in c.iter_batches()}
        assert pending.batch_id in ids and done.batch_id not in ids
        c.cancel(pending.batch_id)
        result = c.cleanup(days_old=0)
        assert result.deleted == [pending.batch_id] and result.count == 1


def test_recover_returns_what_a_killed_worker_held(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server("--workers", "0")
    with Client(s.url) as c:
        b = c.create_batch("slow", list(range(40)), params={"ms": 2000}, parallel_jobs=3)
        w = Proc(["worker", "--store", str(s.store), "--processors", str(PROCS), "--concurrency", "3"],
                 tmp_path / "worker.log")
        try:
            wait_for(lambda: c.get_batch(b.batch_id).items_running, timeout=15)
            w.signal(signal.SIGKILL)
            w.wait(10)
            held = c.get_batch(b.batch_id).items_running
            got = c.recover()
            assert (got.recovered, got.items, got.batches) == (1, held, 1)
            after = c.get_batch(b.batch_id)
            assert after.items_running == 0 and after.items_pending == 40
            assert c.recover().recovered == 0
        finally:
            w.stop()
        c.cancel(b.batch_id)
