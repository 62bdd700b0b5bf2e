"""Webhook delivery: the outbox sender.

Stores write a delivery row in the same transaction that makes an event happen (a batch reaching a
final state), so an event is never lost between the state change and the send, whichever process ran
the items. This task, one per server, sends what is due: ``batch.progress`` rows are added here for
batches that asked for them, at most every ``webhook_progress_s``; every delivery is signed per the
Standard Webhooks specification (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), retried
with exponential backoff and jitter until ``webhook_max_attempts``, and each attempt is recorded on the
row (``GET /batches/{id}/webhooks``). A claimed delivery is leased, so several servers on one store do
not send it twice; a server killed mid-send leaves the lease to expire and the delivery is sent again
(receivers de-duplicate on ``webhook-id``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook as Signer

from batchyard.core.engine import Engine
from batchyard.core.store import DueDelivery
from batchyard.server import netguard
from batchyard.server.errors import UrlNotAllowed
from batchyard.server.settings import Settings

log = logging.getLogger("batchyard.webhooks")
SECRET_SETTING = "webhook_secret"
DISABLED = "webhook_disabled:"  # + URL: a receiver that answered 410 Gone
BATCH_SIZE = 32
IDLE_SECONDS = 0.5


class EndpointGone(Exception):
    pass


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_secret(engine: Engine, settings: Settings) -> str:
    """The configured secret, else the one this store generated the first time it was asked (so every
    server on the store signs alike, and a restart does not change it)."""
    if settings.webhook_secret:
        return settings.webhook_secret
    return engine.store.get_setting(SECRET_SETTING) or engine.store.put_setting_once(SECRET_SETTING, new_secret())


def body(d: DueDelivery) -> str:
    """The Standard Webhooks envelope: the same bytes on every attempt."""
    stamp = datetime.fromtimestamp(d.created_at, UTC).isoformat().replace("+00:00", "Z")
    return f'{{"type":{json.dumps(d.event)},"timestamp":"{stamp}","data":{d.payload}}}'


def backoff(attempt: int, settings: Settings) -> float:
    """Seconds before attempt ``attempt + 1``: doubling from webhook_backoff_s, with ±20% jitter."""
    return settings.webhook_backoff_s * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)


class Dispatcher:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self.signer = Signer(signing_secret(engine, settings))
        self.lease = settings.webhook_timeout_s + 30

    async def run(self) -> None:
        store = self.engine.store
        # The transport runs the SSRF guard at each send and connects only to the address it judged
        # (no second DNS lookup for a rebinding answer to slip into).
        transport = netguard.PinnedTransport(allow_private=self.settings.allow_private_network)
        async with httpx.AsyncClient(timeout=self.settings.webhook_timeout_s, follow_redirects=False,
                                     transport=transport, headers={"user-agent": "batchyard-webhooks"}) as http:
            while True:
                try:
                    await asyncio.to_thread(store.enqueue_progress_webhooks, self.settings.webhook_progress_s)
                    due = await asyncio.to_thread(store.claim_deliveries, BATCH_SIZE, self.lease)
                    if due:
                        await asyncio.gather(*(self.deliver(http, d) for d in due))
                        continue
                except Exception:  # a failing sweep is retried; the outbox keeps what was not sent
                    log.exception("webhook sweep failed")
                await asyncio.sleep(IDLE_SECONDS)

    async def deliver(self, http: httpx.AsyncClient, d: DueDelivery) -> None:
        attempt = d.attempts + 1
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        final = False
        try:
            gone = await asyncio.to_thread(self.engine.store.get_setting, DISABLED + d.url)
            if gone:
                raise EndpointGone(f"endpoint disabled: it answered 410 Gone at {gone}")
            data = body(d)
            now = datetime.now(UTC)
            headers = {"content-type": "application/json", "webhook-id": d.delivery_id,
                       "webhook-timestamp": str(int(now.timestamp())),
                       "webhook-signature": self.signer.sign(d.delivery_id, now, data)}
            resp = await http.post(d.url, content=data.encode(), headers=headers)
            status = resp.status_code
            if status == 410:  # Standard Webhooks: the receiver wants no more; stop sending it anything
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                await asyncio.to_thread(self.engine.store.put_setting_once, DISABLED + d.url, stamp)
                raise EndpointGone("HTTP 410 Gone: the endpoint is disabled")
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (" (redirects are not followed)" if resp.is_redirect else "")
        except (UrlNotAllowed, EndpointGone, httpx.InvalidURL) as exc:  # InvalidURL: httpx reads no octal hosts
            error, final = str(exc), True  # trying again will not change the answer
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        delivered = error is None
        retry_at = None
        if not delivered and not final and attempt < self.settings.webhook_max_attempts:
            retry_at = time.time() + backoff(attempt, self.settings)
        record: dict[str, Any] = {"at": time.time(), "status_code": status, "error": error,
                                  "duration_ms": round((time.monotonic() - started) * 1000, 3)}
        if not delivered:
            log.warning("webhook %s for %s to %s: attempt %d failed: %s", d.event, d.batch_id, d.url, attempt, error)
        await asyncio.to_thread(self.engine.store.finish_delivery, d.delivery_id, record, retry_at, delivered)
