"""Health, metrics, processors (unsafe ones hidden), OpenAPI completeness, recovery, cleanup and retention."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _serve_support import API, Server

from batchyard import Client
from batchyard.client import OPERATIONS, AsyncClient, ForbiddenError


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
    assert 'batchyard_queue_depth{processor="sync-analyze"}' in lines
    assert lines["batchyard_workers"] >= 1
    assert "# TYPE batchyard_items_processed_total counter" in text


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


def test_openapi_is_complete_and_the_client_covers_it(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    ops = {(m.upper(), path.removeprefix(API)) for path, item in spec["paths"].items() for m in item}
    assert ops == set(OPERATIONS), ops ^ set(OPERATIONS)
    for name in OPERATIONS.values():
        assert callable(getattr(Client, name)) and callable(getattr(AsyncClient, name)), name
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
        assert c.recover() == 0
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
