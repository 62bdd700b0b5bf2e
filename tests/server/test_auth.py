"""API keys and tenants against a real server: 401s, tenant isolation (404 for another tenant's batch on
every route), keys created and revoked in the store while serving, loopback-only without keys, and the
per-tenant limits on queued (429 + Retry-After) and running items."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from _serve_support import API, BIN, Server, free_port, wait_for

from batchyard import Client
from batchyard.client.errors import NotFoundError, RateLimitedError, UnauthorizedError

ACME = "acme-key-0123456789abcdef"
BETA = "beta-key-0123456789abcdef"


@pytest.fixture
def keyed(start_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("BATCHYARD_API_KEYS", f"acme:{ACME}, beta:{BETA}")
    return start_server("--workers", "2")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_calls_without_a_valid_key_are_401(keyed: Server) -> None:
    r = httpx.get(f"{keyed.url}{API}/batches")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.get(f"{keyed.url}{API}/batches", headers=bearer("not-a-key"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(f"{keyed.url}{API}/batches", json={"processor": "slow", "items": [1]},
                   headers={"Authorization": f"Basic {ACME}"})
    assert r.status_code == 401
    for open_path in ("/health", "/metrics", "/processors"):  # probes and the processor list stay open
        assert httpx.get(f"{keyed.url}{API}{open_path}").status_code == 200
    assert httpx.get(f"{keyed.url}/openapi.json").status_code == 200
    with Client(keyed.url, api_key="wrong-key-0123456789") as c, pytest.raises(UnauthorizedError) as info:
        c.list_batches()
    assert info.value.code == "invalid_api_key"


def test_each_tenant_sees_only_its_batches(keyed: Server) -> None:
    with Client(keyed.url, api_key=ACME) as acme, Client(keyed.url, api_key=BETA) as beta:
        a = acme.create_batch("slow", [1, 2], params={"ms": 1})
        assert a.tenant == "acme"
        acme.wait(a.batch_id, timeout=15)
        b = beta.create_batch("slow", [3])
        assert b.tenant == "beta"
        assert [x.batch_id for x in acme.list_batches().batches] == [a.batch_id]
        assert [x.batch_id for x in beta.list_batches().batches] == [b.batch_id]
        with pytest.raises(NotFoundError):
            beta.get_batch(a.batch_id)
    other = bearer(BETA)
    base = f"{keyed.url}{API}/batches/{a.batch_id}"
    for method, path in [("GET", ""), ("GET", "/items"), ("GET", "/items/1"), ("GET", "/results"),
                         ("GET", "/events"), ("GET", "/webhooks"), ("POST", "/pause"), ("POST", "/cancel"),
                         ("POST", "/retry"), ("DELETE", "")]:
        r = httpx.request(method, base + path, headers=other)
        assert r.status_code == 404, (method, path, r.status_code)
        assert r.json()["error"]["code"] == "batch_not_found"
    assert httpx.get(base, headers=bearer(ACME)).json()["status"] == "completed"  # untouched by beta's tries


def test_store_keys_work_and_revoking_takes_effect(start_server: Callable[..., Server], tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    made = subprocess.run([str(BIN), "keys", "create", "--tenant", "team-1", "--name", "ci", "--store", str(store)],
                          capture_output=True, text=True, check=True)
    key = made.stdout.strip()
    assert key.startswith("by_") and "team-1" in made.stderr
    s = start_server("--workers", "1", store=store)
    assert httpx.get(f"{s.url}{API}/batches").status_code == 401
    with Client(s.url, api_key=key) as c:
        assert c.create_batch("slow", [1]).tenant == "team-1"
    listed = subprocess.run([str(BIN), "keys", "list", "--store", str(store)], capture_output=True, text=True,
                            check=True).stdout
    key_id = next(w for w in listed.split() if w.startswith("key_"))
    assert key not in listed and "team-1" in listed
    subprocess.run([str(BIN), "keys", "revoke", key_id, "--store", str(store)], check=True, capture_output=True)
    wait_for(lambda: httpx.get(f"{s.url}{API}/batches", headers=bearer(key)).status_code == 401, timeout=10)
    time.sleep(2.5)  # past the keyring's look at the store: revoking the last key locks the server, never opens it
    assert httpx.get(f"{s.url}{API}/batches", headers=bearer(key)).status_code == 401
    assert httpx.get(f"{s.url}{API}/batches").status_code == 401
    bad = subprocess.run([str(BIN), "keys", "revoke", "key_nope", "--store", str(store)], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "key_nope" in bad.stderr


def _outside_address() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET" and not a.address.startswith("127."):
                return str(a.address)
    return None


def test_without_keys_the_server_binds_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        p = subprocess.Popen([str(BIN), "serve", "--host", "0.0.0.0", "--port", str(port), "--store",
                              str(tmp_path / "s.db"), "--workers", "0"], stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}"), timeout=15)
        assert "binding to 127.0.0.1" in log.read_text()
        outside = _outside_address()
        if outside is not None:
            assert not _answers(f"http://{outside}:{port}")
    finally:
        p.terminate()
        p.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + API + "/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_queued_items_limit_is_per_tenant_and_refuses_whole(start_server: Callable[..., Server],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_API_KEYS", f"acme:{ACME},beta:{BETA}")
    s = start_server("--workers", "0", "--tenant-max-queued", "5")
    with Client(s.url, api_key=ACME) as acme, Client(s.url, api_key=BETA) as beta:
        acme.create_batch("slow", [1, 2, 3])
        with pytest.raises(RateLimitedError) as info:
            acme.create_batch("slow", [4, 5, 6])
        assert info.value.code == "tenant_limit" and info.value.retry_after == 30
        assert len(acme.list_batches().batches) == 1  # nothing of the refused batch was created
        r = httpx.post(f"{s.url}{API}/batches/upload", files={"file": ("x.txt", b"a\nb\nc\n")},
                       data={"processor": "slow"}, headers=bearer(ACME))
        assert r.status_code == 429 and r.headers["retry-after"] == "30"
        acme.create_batch("slow", [4, 5])  # exactly up to the limit is fine
        beta.create_batch("slow", [1, 2, 3, 4, 5])  # the other tenant has its own room


def test_running_items_are_capped_per_tenant(start_server: Callable[..., Server],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_API_KEYS", f"acme:{ACME},beta:{BETA}")
    s = start_server("--workers", "8", "--tenant-max-running", "2")
    with Client(s.url, api_key=ACME) as acme, Client(s.url, api_key=BETA) as beta:
        a = acme.create_batch("slow", list(range(12)), params={"ms": 150}, parallel_jobs=8)
        b = beta.create_batch("slow", list(range(4)), params={"ms": 150}, parallel_jobs=8)
        acme.wait(a.batch_id, timeout=30)
        beta.wait(b.batch_id, timeout=30)
        peak, peak_other = _most_at_once(acme, a.batch_id), _most_at_once(beta, b.batch_id)
        # items_running also counts items claimed ahead; the cap holds what actually runs at once
        assert peak == 2 and peak_other == 2  # a cap, not a throttle to one


def _most_at_once(c: Client, batch_id: str) -> int:
    """The most items of the batch that ran at the same moment, from their recorded start and end times."""
    edges = []
    for it in c.iter_items(batch_id):
        assert it.status == "succeeded" and it.started_at and it.finished_at
        edges += [(it.started_at.timestamp(), 1), (it.finished_at.timestamp(), -1)]
    most = now = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        now += step
        most = max(most, now)
    return most


def test_websockets_take_the_key_by_header_or_query_and_keep_tenants_apart(keyed: Server) -> None:
    import json

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with Client(keyed.url, api_key=ACME) as acme:
        a = acme.create_batch("slow", [1])
        acme.wait(a.batch_id, timeout=15)
        url = acme.ws_url(a.batch_id)
    with pytest.raises(InvalidStatus):  # refused at the handshake without a key
        connect(url, open_timeout=5)
    with connect(url, open_timeout=5, additional_headers=bearer(ACME)) as ws:
        assert json.loads(ws.recv(timeout=5))["data"]["batch"]["batch_id"] == a.batch_id
    with connect(f"{url}?api_key={ACME}", open_timeout=5) as ws:  # browsers cannot set headers
        assert json.loads(ws.recv(timeout=5))["event"] == "state"
    with connect(f"{url}?api_key={BETA}", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["error"]["code"] == "batch_not_found"


def test_cleanup_deletes_only_the_callers_batches(keyed: Server) -> None:
    with Client(keyed.url, api_key=ACME) as acme, Client(keyed.url, api_key=BETA) as beta:
        a = acme.create_batch("slow", [1])
        b = beta.create_batch("slow", [2])
        acme.wait(a.batch_id, timeout=15)
        beta.wait(b.batch_id, timeout=15)
        assert acme.cleanup(days_old=0).deleted == [a.batch_id]
        assert beta.get_batch(b.batch_id).status == "completed"
        assert beta.cleanup(days_old=0).deleted == [b.batch_id]
