"""The dashboard's server side: the static files at ``/`` (open without a key, behind a strict CSP, never
in the way of the API's own 404/405) and ``GET /batches/{id}/timeline`` that its chart is drawn from."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _serve_support import API, Server

from batchyard import AsyncClient, Client
from batchyard.client.errors import NotFoundError
from batchyard.server.dashboard import DIRECTORY

ACME = "acme-key-0123456789abcdef"
BETA = "beta-key-0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(start_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("BATCHYARD_API_KEYS", f"acme:{ACME}, beta:{BETA}")
    return start_server("--workers", "2")


def test_the_page_needs_no_key_and_the_api_still_does(keyed: Server) -> None:
    r = httpx.get(keyed.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert '<script type="module"' in r.text
    js = httpx.get(keyed.url + "/js/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert httpx.get(keyed.url + API + "/batches").status_code == 401


def test_api_paths_keep_their_own_errors(server: Server) -> None:
    r = httpx.get(server.url + API + "/no/such/route")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.put(server.url + API + "/batches")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = httpx.get(server.url + "/no-such-page.html")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert httpx.get(server.url + "/docs").status_code == 200
    assert httpx.get(server.url + "/openapi.json").status_code == 200


def test_every_file_the_pages_load_is_there() -> None:
    """index.html's scripts and styles and every module's imports resolve: there is no build step to catch
    a typo, and a missing module is a blank page."""
    index = (DIRECTORY / "index.html").read_text()
    wanted = {*re.findall(r'<script [^>]*src="([^"]+)"', index),
              *re.findall(r'<link rel="stylesheet" href="([^"]+)"', index)}
    assert wanted, "index.html loads nothing?"
    seen: set[Path] = set()
    todo = [DIRECTORY / w for w in wanted]
    while todo:
        path = todo.pop()
        assert path.is_file(), f"{path.relative_to(DIRECTORY)} is missing"
        if path in seen:
            continue
        seen.add(path)
        if path.suffix == ".js":
            for target in re.findall(r'^\s*(?:import|export)\b[^;]*?from\s+"(\.[^"]+)"', path.read_text(), re.M | re.S):
                todo.append((path.parent / target).resolve())
    assert any(p.suffix == ".js" for p in seen) and any(p.suffix == ".css" for p in seen)


def test_timeline_counts_finished_items(server: Server) -> None:
    with Client(server.url) as c:
        b = c.create_batch("slow", [{"n": i} for i in range(6)] + [{"flag": __file__}], params={"ms": 1})
        c.wait(b.batch_id, timeout=20)
        points = c.timeline(b.batch_id)
        assert points and sum(p.succeeded for p in points) == 6 and sum(p.failed for p in points) == 1
        assert 1 <= len(points) <= 200 and points[0].seconds >= 1
        wide = c.timeline(b.batch_id, bucket_seconds=3600)
        assert len(wide) == 1 and wide[0].seconds == 3600 and wide[0].succeeded == 6
        with pytest.raises(NotFoundError):
            c.timeline("batch_nope")
    r = httpx.get(f"{server.url}{API}/batches/{b.batch_id}/timeline", params={"bucket_seconds": 0})
    assert r.status_code == 422


def test_timeline_async_client(server: Server) -> None:
    async def run() -> int:
        async with AsyncClient(server.url) as c:
            b = await c.create_batch("slow", [1, 2, 3])
            await c.wait(b.batch_id, timeout=20)
            return sum(p.succeeded for p in await c.timeline(b.batch_id))

    assert asyncio.run(run()) == 3


def test_timeline_is_the_tenants_own(keyed: Server) -> None:
    with Client(keyed.url, api_key=ACME) as acme, Client(keyed.url, api_key=BETA) as beta:
        b = acme.create_batch("slow", [1])
        acme.wait(b.batch_id, timeout=15)
        assert acme.timeline(b.batch_id)[0].succeeded == 1
        with pytest.raises(NotFoundError):
            beta.timeline(b.batch_id)
    assert httpx.get(f"{keyed.url}{API}/batches/{b.batch_id}/timeline").status_code == 401
