"""The PostgreSQL store's service tables: the webhook outbox, API keys, settings, statistics, tenant usage.

A mixin of ``PostgresStore`` (one noun per module: the queue in ``postgres.py``, what the HTTP service
keeps beside it here); it uses the store's connections and its named queries.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from batchyard.core.errors import IdempotencyConflict, NotFound
from batchyard.core.models import ApiKeyInfo, BatchInfo, ProcessorStats, WebhookDelivery, ts
from batchyard.core.store import DueDelivery, IdempotencyRecord
from batchyard.store.sql import queries

Q = queries("postgres")
_Row = dict[str, Any]


class PostgresService:
    """Store methods for the service's tables; ``PostgresStore`` provides the connections."""

    def _conn(self) -> AbstractContextManager[psycopg.Connection[_Row]]:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[psycopg.Connection[_Row]]:
        raise NotImplementedError

    @staticmethod
    def _snapshot(row: _Row) -> BatchInfo:
        raise NotImplementedError

    def _enqueue(self, conn: psycopg.Connection[_Row], row: _Row, event: str) -> None:
        """Write a webhook delivery for ``event``, with the batch as it is now, in the caller's transaction
        (an outbox: the event is sent if and only if the change it reports committed)."""
        info = self._snapshot(row)
        if info.webhook is None:
            return
        conn.execute(Q["enqueue_delivery"], {
            "id": f"msg_{uuid.uuid4().hex}", "batch_pk": row["pk"], "batch_id": row["id"], "tenant": row["tenant"],
            "event": event, "url": info.webhook.url, "payload": info.model_dump_json()})

    def processor_stats(self) -> dict[str, ProcessorStats]:
        with self._conn() as conn:
            rows = conn.execute(Q["processor_stats"]).fetchall()
        return {r["processor"]: ProcessorStats(succeeded=r["succeeded"], failed=r["failed"], retried=r["retried"],
                                               duration_sum=r["duration_sum"], buckets=list(r["buckets"]))
                for r in rows}

    def tenant_usage(self, tenant: str) -> tuple[int, int]:
        with self._conn() as conn:
            row = conn.execute(Q["tenant_usage"], {"tenant": tenant}).fetchone()
        assert row is not None
        return int(row["queued"]), int(row["running"])

    # -- webhooks ----------------------------------------------------------------------------

    def enqueue_progress_webhooks(self, interval: float) -> int:
        """A batch.progress delivery for each running batch that asked for them, changed since its last
        one, and has had none for ``interval`` seconds (by the database clock)."""
        args = {"interval": float(interval)}
        with self._conn() as conn:
            if conn.execute(Q["progress_candidates"] + " LIMIT 1", args).fetchone() is None:
                return 0  # the usual answer, found without taking the lock
        with self._tx() as conn:
            conn.execute(Q["progress_lock"])
            rows = conn.execute(Q["progress_candidates"], args).fetchall()
            for row in rows:
                self._enqueue(conn, row, "batch.progress")
        return len(rows)

    def claim_deliveries(self, limit: int, lease_seconds: float) -> list[DueDelivery]:
        with self._conn() as conn:
            rows = conn.execute(Q["claim_deliveries"], {"limit": limit, "lease": float(lease_seconds)}).fetchall()
        rows.sort(key=lambda r: (r["created"], r["id"]))
        return [DueDelivery(r["id"], r["batch_id"], r["tenant"], r["event"], r["url"], r["payload"], r["created"],
                            r["n"]) for r in rows]

    def finish_delivery(self, delivery_id: str, attempt: dict[str, Any], next_attempt_at: float | None,
                        delivered: bool) -> None:
        status = "delivered" if delivered else "pending" if next_attempt_at is not None else "failed"
        # The sender's clock says when to try again; keep it as a delay so the database clock judges it.
        delay = None if delivered or next_attempt_at is None else max(0.0, next_attempt_at - time.time())
        with self._conn() as conn:
            conn.execute(Q["finish_delivery"], {"attempt": json.dumps(attempt), "status": status, "delay": delay,
                                                "id": delivery_id})

    def list_deliveries(self, batch_id: str) -> list[WebhookDelivery]:
        with self._conn() as conn:
            rows = conn.execute(Q["deliveries_of"], {"batch_id": batch_id}).fetchall()
        return [WebhookDelivery(
            delivery_id=r["id"], batch_id=r["batch_id"], event=r["event"], url=r["url"], status=r["status"],
            created_at=r["created_at"], next_attempt_at=r["next_attempt_at"] if r["status"] == "pending" else None,
            delivered_at=r["delivered_at"], attempts=[{**a, "at": ts(a["at"])} for a in r["attempts"]])
            for r in rows]

    # -- API keys and settings -------------------------------------------------------------------

    def add_api_key(self, key_id: str, tenant: str, name: str | None, digest: str) -> ApiKeyInfo:
        with self._conn() as conn:
            row = conn.execute(Q["add_api_key"], {"id": key_id, "tenant": tenant, "name": name,
                                                  "digest": digest}).fetchone()
        assert row is not None
        return _key_info(row)

    # -- idempotency keys --------------------------------------------------------------------

    def _take_idempotency_key(self, conn: psycopg.Connection[_Row], tenant: str, key: str, request_hash: str,
                              pk: int) -> None:
        """In ``create_batch``'s transaction. A concurrent insert of the same key waits for the other
        transaction: if it commits, this one conflicts (and, raising, rolls its batch back)."""
        cur = conn.execute("INSERT INTO idempotency_keys (tenant, key, request_hash, batch_pk) "
                           "VALUES (%(tenant)s, %(key)s, %(hash)s, %(pk)s) ON CONFLICT (tenant, key) DO NOTHING",
                           {"tenant": tenant, "key": key, "hash": request_hash, "pk": pk})
        if cur.rowcount == 0:
            found = self._find_idempotency_key(conn, tenant, key)
            assert found is not None  # a key goes with its batch, in one transaction
            raise IdempotencyConflict(key, found.batch_id, found.request_hash)

    @staticmethod
    def _find_idempotency_key(conn: psycopg.Connection[_Row], tenant: str, key: str) -> IdempotencyRecord | None:
        row = conn.execute("SELECT b.id, k.request_hash, extract(epoch FROM k.created_at)::float8 AS created_at "
                           "FROM idempotency_keys k JOIN batches b ON b.pk = k.batch_pk "
                           "WHERE k.tenant = %(tenant)s AND k.key = %(key)s", {"tenant": tenant, "key": key}).fetchone()
        return IdempotencyRecord(row["id"], row["request_hash"], row["created_at"]) if row else None

    def find_idempotency_key(self, tenant: str, key: str) -> IdempotencyRecord | None:
        with self._conn() as conn:
            return self._find_idempotency_key(conn, tenant, key)

    def find_api_key(self, digest: str) -> ApiKeyInfo | None:
        with self._conn() as conn:
            row = conn.execute(Q["find_api_key"], {"digest": digest}).fetchone()
        return _key_info(row) if row else None

    def list_api_keys(self) -> list[ApiKeyInfo]:
        with self._conn() as conn:
            return [_key_info(r) for r in conn.execute(Q["list_api_keys"]).fetchall()]

    def revoke_api_key(self, key_id: str) -> ApiKeyInfo:
        with self._conn() as conn:
            row = conn.execute(Q["revoke_api_key"], {"id": key_id}).fetchone()
        if row is None:
            raise NotFound(f"no API key {key_id!r}", kind="api_key", ident=key_id)
        return _key_info(row)

    def get_setting(self, key: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute(Q["get_setting"], {"key": key}).fetchone()
        return row["value"] if row else None

    def put_setting_once(self, key: str, value: str) -> str:
        # Two statements: after waiting on a concurrent insert of the same key, only a new statement
        # (a new snapshot) sees the value that won.
        with self._tx() as conn:
            conn.execute(Q["put_setting_once"], {"key": key, "value": value})
            row = conn.execute(Q["get_setting"], {"key": key}).fetchone()
        assert row is not None
        return str(row["value"])


def _key_info(r: _Row) -> ApiKeyInfo:
    return ApiKeyInfo(key_id=r["id"], tenant=r["tenant"], name=r["name"], created_at=r["created_at"],
                      revoked_at=r["revoked_at"])
