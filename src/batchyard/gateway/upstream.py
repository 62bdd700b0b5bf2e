"""Calling the upstream: one httpx client per event loop, and the shared limits (``limits``) applied
around every request.

A process has one ``Gateway``: the server configures it at start-up (``configure``) with its own store; a
separate ``batchyard worker`` loading this processor builds it from the environment (the same
``BATCHYARD_*`` settings as the server, and ``BATCHYARD_STORE``) the first time it sends a request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any

import httpx

from batchyard.core import processor as registry
from batchyard.core.store import Store
from batchyard.gateway import limits
from batchyard.gateway.config import GatewayConfig, Upstream

log = logging.getLogger("batchyard.gateway")
PROCESSOR = "openai-request"
CACHE_SECONDS = 0.25  # how stale a process's view of the shared limits may be when it sends without asking
RATE_WINDOW = 2.0     # seconds over which a process measures the rate it sends at
LATE_SECONDS = 0.2    # a paced send woken this much after its slot takes a new one instead of going at once


class Gateway:
    def __init__(self, config: GatewayConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._cache: dict[str, tuple[dict[str, Any] | None, float]] = {}
        self._sent: dict[str, deque[float]] = {}

    # -- HTTP --------------------------------------------------------------------------------

    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            n = self.config.concurrency
            client = self._clients[loop] = httpx.AsyncClient(
                timeout=httpx.Timeout(self.config.timeout_s, connect=min(30.0, self.config.timeout_s)),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n), follow_redirects=False)
        return client

    async def post(self, up: Upstream, path: str, body: Any, idempotency_key: str) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key}
        key = up.key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._sent.setdefault(up.limit_key, deque()).append(time.monotonic())
        return await self.client().post(up.endpoint(path), json=body, headers=headers)

    def sending_rps(self, up: Upstream) -> float | None:
        """The rate this process has been sending to ``up`` at, over the last few seconds."""
        sent = self._sent.get(up.limit_key)
        if not sent:
            return None
        now = time.monotonic()
        while sent and sent[0] < now - RATE_WINDOW:
            sent.popleft()
        return len(sent) / RATE_WINDOW if sent else None

    # -- shared limits -------------------------------------------------------------------------

    async def _update(self, up: Upstream, fn: Any) -> dict[str, Any]:
        state = await asyncio.to_thread(self.store.update_shared_state, up.limit_key, fn)
        self._cache[up.limit_key] = (state, time.monotonic())
        return state

    async def view(self, up: Upstream) -> dict[str, Any] | None:
        """The shared limits document, at most ``CACHE_SECONDS`` old."""
        cached = self._cache.get(up.limit_key)
        if cached is None or time.monotonic() - cached[1] > CACHE_SECONDS:
            state = await asyncio.to_thread(self.store.get_shared_state, up.limit_key)
            cached = self._cache[up.limit_key] = (state, time.monotonic())
        return cached[0]

    async def acquire(self, up: Upstream, tokens: float) -> None:
        """Wait until this request may be sent under the shared limits, and reserve its place."""
        nominal = self.config.nominal
        while True:
            if not nominal.limited and limits.unlimited(await self.view(up), time.time()):
                return  # nothing to pace: no store write on the way (the no-limit path stays fast)
            result: dict[str, Any] = {}

            def reserve(state: dict[str, Any] | None, now: float, out: dict[str, Any] = result) -> dict[str, Any]:
                new, at, ok = limits.reserve(state, now, nominal, tokens)
                out.update(at=at, ok=ok, now=now)
                return new

            await self._update(up, reserve)
            # The store's clock decided; wait by the same distance on ours.
            delay = result["at"] - result["now"]
            due = time.monotonic() + max(0.0, delay)
            if delay > 0:
                await asyncio.sleep(delay)
            if result["ok"]:
                if time.monotonic() - due <= LATE_SECONDS:
                    return
                # Woken late (a starved process): sending now would bunch this request with the ones paced after
                # it, over the upstream's limit. Its slot is let go (a little capacity lost) and a new one taken.
                continue

    async def throttled(self, up: Upstream, status: int, retry_after: float | None) -> None:
        sending = self.sending_rps(up)
        nominal = self.config.nominal
        await self._update(up, lambda s, now: limits.throttled(s, now, nominal, status, retry_after, sending))

    async def correct(self, up: Upstream, estimated: float, actual: float) -> None:
        nominal = self.config.nominal
        if nominal.tpm and actual and abs(actual - estimated) >= 1:
            await self._update(up, lambda s, now: limits.correct_tokens(s, now, nominal, estimated, actual))

    def describe(self) -> dict[str, Any]:
        """The limits of every configured upstream as they stand, read from the store."""
        now = time.time()
        out = {}
        for up in self.config.upstreams:
            out[up.url] = limits.describe(self.store.get_shared_state(up.limit_key), now)
        return out


_gateway: Gateway | None = None
_lock = threading.Lock()


def configure(config: GatewayConfig, store: Store) -> Gateway:
    """Set this process's gateway (the server does, at start-up), and the processor's concurrency to the
    upstream's: the store then holds it across every worker, as it does any processor's."""
    global _gateway
    with _lock:
        _gateway = Gateway(config, store)
    registry.get(PROCESSOR).concurrency = config.concurrency
    return _gateway


def gateway() -> Gateway:
    """This process's gateway; built from the environment in a worker process nobody configured."""
    global _gateway
    with _lock:
        if _gateway is None:
            import os

            from batchyard.server.settings import Settings
            from batchyard.store import open_store

            if not os.environ.get("BATCHYARD_STORE"):
                # The limits live in the store every worker shares; guessing the default store here would keep
                # them apart from the server's. (Retried like any error, with this message on the item.)
                raise RuntimeError("a worker running openai-request needs BATCHYARD_STORE set to the server's store "
                                   "(the upstream's shared limits live there), not only --store")
            config = GatewayConfig.from_settings(Settings())
            _gateway = Gateway(config, open_store())
            registry.get(PROCESSOR).concurrency = config.concurrency
        return _gateway
