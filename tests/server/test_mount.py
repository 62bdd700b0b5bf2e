"""``batchyard serve --mount``: adapters (FastAPI routers) mounted into a real server, ahead of its own routes,
behind its API keys, with their own error shape; broken adapters stop the start-up with one line and exit 2."""

from __future__ import annotations

import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _serve_support import API, BIN, PROCS, Server, free_port

KEY = "mount-key-0123456789abcdef"

ADAPTER = '''
"""A tiny adapter: its own health (colliding with /api/v1/health), batches over core, its own errors."""
from typing import Any

from fastapi import APIRouter, Request

from batchyard.server import submit
from batchyard.server.deps import engine_of, owned, settings_of, tenant_of
from batchyard.server.mounts import shaped_errors
from batchyard.server.schemas import SubmitOptions

# Errors in this adapter's shape, {"ok": false, "reason": ...}, with batchyard's statuses (401 stays 401)
router = APIRouter(route_class=shaped_errors(lambda status, message, exc: {"ok": False, "reason": message}))


@router.get("/api/v1/health")
def health(request: Request) -> dict[str, Any]:
    return {"status": "healthy", "adapter": "tiny", "tenant": tenant_of(request)}


@router.post("/tiny/jobs")
def start(body: dict[str, Any], request: Request) -> dict[str, Any]:
    engine, settings = engine_of(request), settings_of(request)
    proc = submit.allowed_processor(engine, settings, "slow")
    opts = SubmitOptions(processor=proc.name, params={"ms": 1})
    rows = submit.inline_rows(settings, body["words"], proc, opts.params)
    info = submit.create(engine, opts, proc, settings, rows, "tiny", tenant_of(request))
    return {"job": info.batch_id}


@router.get("/tiny/jobs/{job}")
def status(job: str, request: Request) -> dict[str, Any]:
    info = owned(request, job)
    return {"job": job, "state": info.status, "done": info.items_succeeded}
'''

OTHER = '''
from fastapi import APIRouter

router = APIRouter()


@router.get("/other/ping")
def ping() -> dict[str, str]:
    return {"pong": "yes"}
'''


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_adapter.py"
    path.write_text(textwrap.dedent(ADAPTER))
    return path


def wait_done(url: str, job: str, headers: dict[str, str] | None = None) -> dict[str, object]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = httpx.get(f"{url}/tiny/jobs/{job}", headers=headers).json()
        if got["state"] == "completed":
            return got  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not complete: {got}")


def test_mounted_router_overrides_health_and_makes_ordinary_batches(start_server: Callable[..., Server],
                                                                    adapter: Path) -> None:
    s = start_server("--workers", "2", "--mount", str(adapter))
    r = httpx.get(f"{s.url}{API}/health")
    assert r.status_code == 200 and r.json() == {"status": "healthy", "adapter": "tiny", "tenant": "default"}
    job = httpx.post(f"{s.url}/tiny/jobs", json={"words": ["a", "b", "c"]}).json()["job"]
    assert wait_done(s.url, job)["done"] == 3
    # An ordinary batch: /api/v1 lists it and reads it
    listed = httpx.get(f"{s.url}{API}/batches").json()["batches"]
    assert [b["batch_id"] for b in listed] == [job] and listed[0]["source"] == "tiny"
    # The adapter's errors are its own shape; batchyard's routes keep theirs
    r = httpx.get(f"{s.url}/tiny/jobs/batch_missing")
    assert r.status_code == 404 and r.json()["ok"] is False and "batch_missing" in r.json()["reason"]
    r = httpx.post(f"{s.url}/tiny/jobs", content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["ok"] is False and r.json()["reason"].startswith("invalid request")
    r = httpx.post(f"{s.url}/tiny/jobs", json={"no words": 1})  # a bug in the adapter: 500, still its shape
    assert r.status_code == 500 and r.json() == {"ok": False, "reason": "internal server error; see the server log"}
    r = httpx.get(f"{s.url}{API}/batches/batch_missing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "batch_not_found"
    assert "/tiny/jobs" in httpx.get(f"{s.url}/openapi.json").json()["paths"]


class KeyedServer(Server):
    """Ready when it answers at all: the adapter's /api/v1/health, behind the keys, says 401 to the probe."""

    def _ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"batchyard serve exited with {self.p.returncode}:\n{self.output()}")
            try:
                httpx.get(self.url + API + "/health", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"batchyard serve did not answer within {timeout}s:\n{self.output()}")


def test_mounted_routes_need_the_api_key(tmp_path: Path, adapter: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_API_KEYS", f"acme:{KEY}")
    s = KeyedServer(tmp_path / "store.db", tmp_path / "server.log", "--workers", "1", "--mount", str(adapter))
    try:
        check_keyed(s)
    finally:
        s.stop()


def check_keyed(s: Server) -> None:
    for method, path in [("GET", f"{API}/health"), ("POST", "/tiny/jobs"), ("GET", "/tiny/jobs/x")]:
        r = httpx.request(method, s.url + path, json={"words": ["a"]})
        assert r.status_code == 401 and r.json()["ok"] is False, path  # the adapter's shape, the server's check
    bearer = {"Authorization": f"Bearer {KEY}"}
    r = httpx.get(f"{s.url}{API}/health", headers=bearer)
    assert r.status_code == 200 and r.json()["tenant"] == "acme"
    job = httpx.post(f"{s.url}/tiny/jobs", json={"words": ["a"]}, headers=bearer).json()["job"]
    wait_done(s.url, job, bearer)
    assert httpx.get(f"{s.url}{API}/batches/{job}", headers=bearer).json()["tenant"] == "acme"


def test_mounts_from_the_environment(start_server: Callable[..., Server], adapter: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other_adapter.py"
    other.write_text(OTHER)
    monkeypatch.setenv("BATCHYARD_MOUNTS", f"{adapter}:{other}")
    s = start_server("--workers", "1")
    assert httpx.get(f"{s.url}/other/ping").json() == {"pong": "yes"}
    assert httpx.get(f"{s.url}{API}/health").json()["adapter"] == "tiny"


@pytest.mark.parametrize(("source", "expected"), [
    ("import no_such_module_anywhere\n", "No module named 'no_such_module_anywhere'"),
    ("router = 42\n", "expected a module-level `router = fastapi.APIRouter()`, found a int"),
    ("x = 1\n", "found nothing"),
])
def test_a_broken_mount_stops_the_start_up(tmp_path: Path, source: str, expected: str) -> None:
    bad = tmp_path / "bad_adapter.py"
    bad.write_text(source)
    done = subprocess.run([str(BIN), "serve", "--port", str(free_port()), "--store", str(tmp_path / "s.db"),
                           "--processors", str(PROCS), "--mount", str(bad)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and str(bad) in done.stderr.replace("\n", "") and expected in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_mount_module_stops_the_start_up(tmp_path: Path) -> None:
    done = subprocess.run([str(BIN), "serve", "--port", str(free_port()), "--store", str(tmp_path / "s.db"),
                           "--mount", "no_such_pkg.api"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "cannot load mount from 'no_such_pkg.api'" in done.stderr
