"""Idempotency-Key through the clients against a real server: retries answered with the first batch, another
request with the key refused, racing retries creating one batch, keys kept per tenant."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from _serve_support import Server

from batchyard import AsyncClient, Client
from batchyard.client import ConflictError

ACME = "acme-key-0123456789abcdef"
BETA = "beta-key-0123456789abcdef"


def test_a_retried_create_or_upload_returns_the_first_batch(server: Server, tmp_path: Path) -> None:
    with Client(server.url, timeout=10) as c:
        first = c.create_batch("slow", [1, 2], idempotency_key="create-1")
        again = c.create_batch("slow", [1, 2], idempotency_key="create-1")
        assert again.batch_id == first.batch_id
        with pytest.raises(ConflictError) as info:
            c.create_batch("slow", [1, 2, 3], idempotency_key="create-1")
        assert info.value.code == "idempotency_key_reused" and first.batch_id in info.value.message
        assert c.create_batch("slow", [1, 2]).batch_id != first.batch_id  # no key: a new batch each time

        src = tmp_path / "codes.txt"
        src.write_text("a\nb\n")
        up = c.upload(src, "slow", idempotency_key="upload-1")
        assert c.upload(src, "slow", idempotency_key="upload-1").batch_id == up.batch_id  # type: ignore[union-attr]
        src.write_text("a\nc\n")
        with pytest.raises(ConflictError):
            c.upload(src, "slow", idempotency_key="upload-1")

    async def in_async() -> None:
        async with AsyncClient(server.url, timeout=10) as ac:
            b = await ac.create_batch("slow", [5], idempotency_key="async-1")
            assert (await ac.create_batch("slow", [5], idempotency_key="async-1")).batch_id == b.batch_id

    asyncio.run(in_async())


def test_racing_retries_create_one_batch(server: Server) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        with Client(server.url, timeout=30) as c:
            barrier.wait()
            ids.append(c.create_batch("slow", list(range(500)), idempotency_key="race-1").batch_id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ids) == 8 and len(set(ids)) == 1
    with Client(server.url, timeout=10) as c:
        assert sum(1 for b in c.list_batches(limit=1000).batches if b.batch_id == ids[0]) == 1


def test_keys_are_per_tenant(start_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_API_KEYS", f"acme:{ACME},beta:{BETA}")
    s = start_server("--workers", "1")
    with Client(s.url, api_key=ACME) as acme, Client(s.url, api_key=BETA) as beta:
        a = acme.create_batch("slow", [1], idempotency_key="shared-name")
        b = beta.create_batch("slow", [2], idempotency_key="shared-name")  # another tenant: its own key
        assert a.batch_id != b.batch_id and (a.tenant, b.tenant) == ("acme", "beta")
        assert beta.create_batch("slow", [2], idempotency_key="shared-name").batch_id == b.batch_id
