"""``wait(timeout=...)`` keeps its deadline on a quiet stream: the server's keep-alive pings must not
extend it (the client reads at most WAIT_CHECK_SECONDS before it reconnects and checks the deadline)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from _serve_support import Server

from batchyard import AsyncClient, Client


@pytest.fixture
def server(start_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> Server:
    # pings more often than the time left, so a read timeout as long as that never fires
    monkeypatch.setenv("BATCHYARD_EVENTS_PING_S", "6")
    return start_server("--workers", "1")


def test_wait_times_out_on_a_batch_that_does_not_change(server: Server) -> None:
    with Client(server.url) as c:
        b = c.create_batch("slow", [1], start=False)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="not final"):
            c.wait(b.batch_id, timeout=7)
        assert time.monotonic() - t0 < 13
        c.cancel(b.batch_id)


def test_async_wait_times_out_too(server: Server) -> None:
    async def go() -> float:
        async with AsyncClient(server.url) as c:
            b = await c.create_batch("slow", [1], start=False)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await c.wait(b.batch_id, timeout=7)
            await c.cancel(b.batch_id)
            return time.monotonic() - t0

    assert asyncio.run(go()) < 13
