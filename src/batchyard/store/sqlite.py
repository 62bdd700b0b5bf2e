"""The embedded store: one SQLite file in WAL mode.

Durability settings, stated once: ``journal_mode=WAL`` (readers never block the writer),
``synchronous=NORMAL`` (a committed transaction survives the process being killed; only an OS crash or
power loss can drop the last few commits), ``busy_timeout`` so concurrent writers wait instead of
failing, and every write transaction opened with ``BEGIN IMMEDIATE`` so it takes the write lock up front
and never fails half-way on a lock upgrade.

A file found at the store's path must be a whole batchyard store: an empty, truncated, overwritten or
foreign file is refused with ``StoreDamaged`` (a new store made over it would silently lose every batch it
held), and a new store is made whole beside the path and linked into place, so that no crash leaves a
half-made file there. A full disk fails the write whole with ``StoreUnavailable``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from itertools import islice
from pathlib import Path
from typing import Any

import psutil

from batchyard.core import defaults, failpoints, limits, states
from batchyard.core.errors import (
    ConfigError,
    IdempotencyConflict,
    InputError,
    InvalidTransition,
    NotFound,
    SchemaVersionError,
    StoreDamaged,
    StoreUnavailable,
)
from batchyard.core.execute import encode_outcomes, sanitize_outcomes
from batchyard.core.limits import take_tokens
from batchyard.core.models import (
    PRIORITY_RANK,
    ApiKeyInfo,
    BatchInfo,
    BatchSpec,
    ItemInfo,
    NewItem,
    ProcessorStats,
    TimelinePoint,
    WebhookDelivery,
    WorkerInfo,
    new_batch_id,
    timeline_bucket,
    timeline_points,
    ts,
)
from batchyard.core.scheduling import Held, Runnable, plan
from batchyard.core.states import ITEM_CODE, ITEM_FROM_CODE, BatchStatus
from batchyard.core.store import (
    FAIL,
    OK,
    RETRY,
    BatchRuntime,
    Claimed,
    ClaimResult,
    DueDelivery,
    IdempotencyRecord,
    Outcome,
    Reaped,
    RecordResult,
)
from batchyard.store.common import (
    FINAL_EVENTS,
    Stats,
    batch_info,
    budget_allowance,
    budget_reached,
    construct,
    error_from,
    process_alive,
    startable_items,
)
from batchyard.store.sql import migrations, queries
from batchyard.store.sqlite_files import SQLiteFiles
from batchyard.store.sqlite_resources import SQLiteResources

Q = queries("sqlite")
PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": defaults.SQLITE_BUSY_TIMEOUT_MS,
    "foreign_keys": "off",
    "cache_size": -16000,  # 16 MB per connection; every thread that reads the store has one
    "temp_store": "memory",
}
_SPEC_KEYS = ("params", "failure_policy", "webhook", "description", "tags", "source", "cost_per_item",
              "cost_unit")


class SQLiteStore(SQLiteFiles, SQLiteResources):
    """A Store over one SQLite database file. Safe to share between threads (one connection each)."""

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, _new: bool = False) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._hostname = socket.gethostname()
        if str(path) != ":memory:" and not _new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self._create()
            _check_file(self.path)
        self._migrate()

    def _create(self) -> None:
        """Make a new store beside the path and link it into place (``_new`` skips this for that one)."""
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.new")
        try:
            SQLiteStore(tmp, _new=True).close()  # the last connection to close checkpoints: one whole file
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process made the store meanwhile: that one is the store
            except OSError:  # a file system without hard links: rename (a racing creator's store may be lost)
                if not self.path.exists():
                    os.replace(tmp, self.path)
        finally:
            for suffix in ("", "-wal", "-shm"):
                with suppress(FileNotFoundError):
                    os.unlink(f"{tmp}{suffix}")

    # -- connections -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=defaults.SQLITE_BUSY_TIMEOUT_MS / 1000)
            for name, value in PRAGMAS.items():
                conn.execute(f"PRAGMA {name} = {value}")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def pragma(self, name: str) -> Any:
        return self._conn().execute(f"PRAGMA {name}").fetchone()[0]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk among them)
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and \
                    getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise StoreUnavailable(f"store {self.path} is full ({exc}); nothing of this write was kept: "
                                       "free some space and try again") from None
            raise

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                with suppress(sqlite3.ProgrammingError):
                    conn.close()
            self._conns.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        known = migrations("sqlite")
        latest = known[-1][0]
        with self._write() as conn:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            current = 0
            if has_meta:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                current = int(row[0]) if row else 0
            if current > latest:
                raise SchemaVersionError(
                    f"store {self.path} has schema version {current}, newer than this batchyard knows "
                    f"({latest}); upgrade batchyard")
            for version, sql in known:
                if version > current:
                    for stmt in _statements(sql):
                        conn.execute(stmt)
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                                 (str(version),))

    def schema_version(self) -> int:
        return int(self._conn().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    # -- batches -----------------------------------------------------------------------------

    def create_batch(self, spec: BatchSpec, items: Iterable[NewItem | tuple[str | None, Any]],
                     start: bool = True) -> BatchInfo:
        now = time.time()
        batch_id = new_batch_id()
        dumps = json.dumps
        spec_json = spec.model_dump_json(include=set(_SPEC_KEYS))
        with self._write() as conn:
            cur = conn.execute(Q["insert_batch"], {
                "id": batch_id, "tenant": spec.tenant, "processor": spec.processor,
                "status": BatchStatus.RUNNING if start else BatchStatus.PENDING,
                "priority": PRIORITY_RANK[spec.priority], "parallel": spec.parallel,
                "max_attempts": spec.max_attempts, "spec": spec_json, "fingerprint": spec.fingerprint,
                "now": now, "started_at": now if start else None})
            pk = cur.lastrowid
            if spec.idempotency is not None:  # first: a retry that lost the race reads no items
                self._take_idempotency_key(conn, spec.tenant, spec.idempotency.key, spec.idempotency.request_hash,
                                           pk, now)
            first = conn.execute(Q["next_item_id"]).fetchone()[0]
            next_id = first
            insert = Q["insert_items"]
            rows = iter(items)
            while chunk := list(islice(rows, defaults.INSERT_CHUNK)):
                try:
                    blob = dumps(chunk)  # (key, payload) tuples encode as they are: no per-item work
                except TypeError:  # NewItem values, or a payload that is not JSON
                    try:
                        blob = dumps([(c.key, c.payload) if isinstance(c, NewItem) else c for c in chunk])
                    except TypeError as exc:
                        raise InputError(f"an item is not JSON-serialisable: {exc}") from None
                conn.execute(insert, {"first": next_id, "items": blob})
                next_id += len(chunk)
            n = next_id - first
            conn.execute(Q["finish_insert"], {"first": first, "last": next_id - 1, "n": n, "pk": pk,
                                              "budget": spec.budget, "estimated": spec.cost_estimated})
            if start and n == 0:
                self._settle(conn, pk, now)
        return self.get_batch(batch_id)

    def get_batch(self, batch_id: str) -> BatchInfo:
        row = self._conn().execute(Q["get_batch"], (batch_id,)).fetchone()
        if row is None:
            raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
        return _batch_info(row)

    def find_resumable(self, fingerprint: str) -> BatchInfo | None:
        row = self._conn().execute(Q["find_resumable"], (fingerprint,)).fetchone()
        return _batch_info(row) if row else None

    def list_batches(self, *, status: str | None = None, processor: str | None = None,
                     tag: str | None = None, limit: int = 100, before: str | None = None,
                     tenant: str | None = None, created_after: float | None = None,
                     created_before: float | None = None, updated_after: float | None = None) -> list[BatchInfo]:
        sql = "SELECT * FROM batches WHERE 1=1"
        args: list[Any] = []
        if tenant:
            sql += " AND tenant = ?"
            args.append(tenant)
        if created_after is not None:
            sql += " AND created_at >= ?"
            args.append(created_after)
        if created_before is not None:
            sql += " AND created_at < ?"
            args.append(created_before)
        if updated_after is not None:  # inclusive, like created_after: a follower re-reads ties and de-duplicates
            sql += " AND updated_at >= ?"
            args.append(updated_after)
        if status:
            sql += " AND status = ?"
            args.append(status)
        if processor:
            sql += " AND processor = ?"
            args.append(processor)
        if tag:
            sql += " AND EXISTS (SELECT 1 FROM json_each(spec, '$.tags') WHERE value = ?)"
            args.append(tag)
        if before:
            sql += " AND pk < COALESCE((SELECT pk FROM batches WHERE id = ?), 0)"
            args.append(before)
        # Following changes (updated_after) reads oldest change first, so a page cut by ``limit`` leaves
        # nothing behind the last updated_at it returned; listing reads newest batch first.
        sql += " ORDER BY updated_at, pk LIMIT ?" if updated_after is not None else " ORDER BY pk DESC LIMIT ?"
        args.append(limit)
        return [_batch_info(r) for r in self._conn().execute(sql, args)]

    def transition(self, batch_id: str, action: str, reason: str | None = None) -> BatchInfo:
        if action not in states.USER_ACTIONS:
            raise ValueError(f"{action!r} is not an action a user can take; expected one of "
                             f"{', '.join(sorted(states.USER_ACTIONS))}")
        if action == "pause":
            reason = states.PauseReason(reason or states.PauseReason.USER).value
        now = time.time()
        with self._write() as conn:
            row = conn.execute(Q["get_batch"], (batch_id,)).fetchone()
            if row is None:
                raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
            if action == "retry" and row["status"] in (BatchStatus.COMPLETED, BatchStatus.FAILED) \
                    and row["items_failed"] == 0:
                return _batch_info(row)
            target = states.apply(batch_id, row["status"], action)
            sets = {"status": target, "updated_at": now}
            if action == "pause":
                sets["pause_reason"] = reason or "user"
            if row["status"] == BatchStatus.RUNNING and target != BatchStatus.RUNNING:
                sets["active_seconds"] = row["active_seconds"] + now - (row["running_since"] or now)
                sets["running_since"] = None
            if target == BatchStatus.RUNNING:
                sets["running_since"] = now
                sets["pause_reason"] = None
                if row["started_at"] is None:
                    sets["started_at"] = now
            self._guarded_update(conn, row, sets)
            if action == "cancel":
                n = conn.execute(Q["cancel_pending_items"], (row["first_item"], row["last_item"])).rowcount
                conn.execute("UPDATE batches SET items_pending = items_pending - ?, "
                             "items_cancelled = items_cancelled + ?, status_reason = ? WHERE pk = ?",
                             (n, n, reason or "cancelled by user", row["pk"]))
            elif action == "retry":
                n = conn.execute(Q["retry_failed_items"], (row["first_item"], row["last_item"])).rowcount
                conn.execute("UPDATE batches SET items_failed = items_failed - ?, items_pending = items_pending + ?,"
                             " failing = 0, status_reason = NULL, completed_at = NULL WHERE pk = ?",
                             (n, n, row["pk"]))
            self._settle(conn, row["pk"], now)
        return self.get_batch(batch_id)

    def set_budget(self, batch_id: str, budget: float | None) -> BatchInfo:
        now = time.time()
        with self._write() as conn:
            row = conn.execute(Q["get_batch"], (batch_id,)).fetchone()
            if row is None:
                raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
            conn.execute("UPDATE batches SET budget = ?, updated_at = ? WHERE pk = ?", (budget, now, row["pk"]))
            self._settle(conn, row["pk"], now)  # a lowered budget may already be reached
        return self.get_batch(batch_id)

    def _guarded_update(self, conn: sqlite3.Connection, row: sqlite3.Row, sets: dict[str, Any]) -> None:
        cols = ", ".join(f"{k} = ?" for k in sets)
        cur = conn.execute(f"UPDATE batches SET {cols} WHERE pk = ? AND status = ?",
                           [*sets.values(), row["pk"], row["status"]])
        if cur.rowcount != 1:  # cannot happen inside BEGIN IMMEDIATE; kept as the compare-and-set guard
            raise InvalidTransition("batch", row["id"], row["status"], str(sets.get("status")))
        target = sets.get("status")
        if target != row["status"] and target in FINAL_EVENTS and '"webhook":{' in row["spec"]:
            self._enqueue(conn, conn.execute(Q["batch_by_pk"], (row["pk"],)).fetchone(), FINAL_EVENTS[target])

    def _enqueue(self, conn: sqlite3.Connection, row: sqlite3.Row, event: str) -> None:
        """Write a webhook delivery for ``event``, with the batch as it is now, in the caller's transaction."""
        info = _batch_info(row)
        if info.webhook is None:
            return
        conn.execute(Q["enqueue_delivery"], {
            "id": f"msg_{uuid.uuid4().hex}", "batch_pk": row["pk"], "batch_id": row["id"], "tenant": row["tenant"],
            "event": event, "url": info.webhook.url, "payload": info.model_dump_json(), "now": time.time()})

    def _settle(self, conn: sqlite3.Connection, pk: int, now: float) -> None:
        """End the batch if every item is final; trip its failure policy if it says so.

        A batch that is cancelling, or whose failure policy tripped, runs nothing more: items that come
        back to pending (a retry outcome, a release, a reaped worker) are cancelled here.
        """
        row = conn.execute(Q["batch_by_pk"], (pk,)).fetchone()
        if row is None:
            return
        if row["status"] == BatchStatus.RUNNING and not row["failing"]:
            spec = BatchSpec.model_validate({"processor": row["processor"], **json.loads(row["spec"])})
            why = spec.failure_policy.tripped(row["items_failed"], row["items_total"])
            if why:
                conn.execute("UPDATE batches SET failing = 1, status_reason = ? WHERE pk = ?", (why, pk))
                row = conn.execute(Q["batch_by_pk"], (pk,)).fetchone()
        if row["items_pending"] and (row["failing"] or row["status"] == BatchStatus.CANCELLING):
            n = conn.execute(Q["cancel_pending_items"], (row["first_item"], row["last_item"])).rowcount
            conn.execute("UPDATE batches SET items_pending = items_pending - ?, items_cancelled = items_cancelled + ?"
                         " WHERE pk = ?", (n, n, pk))
            row = conn.execute(Q["batch_by_pk"], (pk,)).fetchone()
        if row["status"] == BatchStatus.RUNNING and not row["failing"] and row["budget"] is not None \
                and budget_reached(row, json.loads(row["spec"])):
            # Not one more item fits the budget and none is in flight: pause, saying why.
            self._guarded_update(conn, row, {
                "status": states.apply(row["id"], row["status"], "pause"),
                "pause_reason": states.PauseReason.BUDGET_REACHED.value, "updated_at": now, "running_since": None,
                "active_seconds": row["active_seconds"] + now - (row["running_since"] or now)})
            return
        action = states.settle(row["status"], row["items_pending"], row["items_running"], bool(row["failing"]))
        if action is None:
            return
        target = states.apply(row["id"], row["status"], action)
        sets: dict[str, Any] = {"status": target, "completed_at": now, "updated_at": now}
        if row["status"] == BatchStatus.RUNNING:
            sets["active_seconds"] = row["active_seconds"] + now - (row["running_since"] or now)
            sets["running_since"] = None
        self._guarded_update(conn, row, sets)

    def delete_batch(self, batch_id: str) -> None:
        with self._write() as conn:
            row = conn.execute(Q["get_batch"], (batch_id,)).fetchone()
            if row is None:
                raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
            if not states.is_final(row["status"]):
                raise InvalidTransition("batch", batch_id, row["status"], "delete")
            self._delete(conn, row["pk"], row["first_item"], row["last_item"])

    def _delete(self, conn: sqlite3.Connection, pk: int, first: int, last: int) -> None:
        # Deliveries still due go out (they carry their own snapshot); finished ones go with the batch.
        conn.execute("DELETE FROM webhook_deliveries WHERE batch_pk = ? AND status != 'pending'", (pk,))
        conn.execute(Q["delete_items"], (first, last))
        conn.execute(Q["delete_batch"], (pk,))
        conn.execute("DELETE FROM slots WHERE batch_pk = ?", (pk,))
        conn.execute("DELETE FROM idempotency_keys WHERE batch_pk = ?", (pk,))

    def cleanup(self, older_than: float) -> list[str]:
        with self._write() as conn:
            rows = conn.execute(Q["old_final_batches"], (older_than,)).fetchall()
            for r in rows:
                self._delete(conn, r["pk"], r["first_item"], r["last_item"])
        return [r["id"] for r in rows]

    # -- items -------------------------------------------------------------------------------

    def _batch_row(self, batch_id: str) -> sqlite3.Row:
        row = self._conn().execute(Q["get_batch"], (batch_id,)).fetchone()
        if row is None:
            raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
        return row

    def iter_items(self, batch_id: str, *, status: str | None = None, after_seq: int = 0,
                   limit: int | None = None) -> Iterator[ItemInfo]:
        row = self._batch_row(batch_id)
        first, last = row["first_item"], row["last_item"]
        cursor = first + after_seq
        left = limit if limit is not None else float("inf")
        sql = "SELECT * FROM items WHERE id BETWEEN ? AND ?"
        code = ITEM_CODE[states.ItemStatus(status)] if status else None
        if code is not None:
            sql += f" AND status = {code}"
        sql += " ORDER BY id LIMIT ?"
        conn = self._conn()
        while left > 0:
            page = conn.execute(sql, (cursor, last, int(min(1000, left)))).fetchall()
            if not page:
                return
            for r in page:
                yield _item_info(batch_id, first, r)
            left -= len(page)
            cursor = page[-1]["id"] + 1

    def result_stats(self, batch_id: str, limit: int = 1000) -> dict[str, dict[str, float]]:
        """count/mean/min/max/sum of every numeric field in the succeeded items' results."""
        row = self._batch_row(batch_id)
        rows = self._conn().execute(Q["result_stats"], {"first": row["first_item"], "last": row["last_item"],
                                                        "limit": limit}).fetchall()
        out = {_dotted(r[0]): {"count": r[1], "mean": r[2] / r[1], "min": r[3], "max": r[4], "sum": r[2]}
               for r in rows}
        return dict(sorted(out.items()))

    def timeline(self, batch_id: str, bucket_seconds: float | None = None) -> list[TimelinePoint]:
        row = self._batch_row(batch_id)
        # The width from the batch's own times (one scan of its items, not two to find their first and last)
        span = (row["completed_at"] or time.time()) - (row["started_at"] or row["created_at"])
        bucket = timeline_bucket(span, bucket_seconds)
        rows = self._conn().execute(Q["timeline"], {"first": row["first_item"], "last": row["last_item"],
                                                    "bucket": bucket}).fetchall()
        return timeline_points((tuple(r) for r in rows), bucket)

    def get_item(self, batch_id: str, item_id: str) -> ItemInfo:
        row = self._batch_row(batch_id)
        first, last = row["first_item"], row["last_item"]
        conn = self._conn()
        r = conn.execute("SELECT * FROM items WHERE key = ? AND id BETWEEN ? AND ?",
                         (item_id, first, last)).fetchone()
        if r is None and item_id.isascii() and item_id.isdigit() and 1 <= int(item_id) <= last - first + 1:
            r = conn.execute("SELECT * FROM items WHERE id = ? AND key IS NULL",
                             (first + int(item_id) - 1,)).fetchone()
        if r is None:
            raise NotFound(f"no item {item_id!r} in batch {batch_id!r}", kind="item", ident=item_id)
        return _item_info(batch_id, first, r)

    # -- workers -----------------------------------------------------------------------------

    def register_worker(self, name: str, processors: list[str], concurrency: int) -> int:
        now = time.time()
        me = psutil.Process()
        with self._write() as conn:
            cur = conn.execute(Q["register_worker"], (
                uuid.uuid4().hex, name, self._hostname, os.getpid(), me.create_time(),
                json.dumps(sorted(processors)), concurrency, now, now))
            return int(cur.lastrowid or 0)

    def heartbeat(self, worker_pk: int, running: dict[str, int]) -> bool:
        with self._write() as conn:
            return conn.execute(Q["heartbeat"], (time.time(), json.dumps(running), worker_pk)).rowcount == 1

    def unregister_worker(self, worker_pk: int) -> None:
        with self._write() as conn:
            self._release_all(conn, [worker_pk], time.time())
            conn.execute(Q["worker_slots_delete"], (worker_pk,))
            conn.execute(Q["delete_worker"], (worker_pk,))

    def list_workers(self) -> list[WorkerInfo]:
        out = []
        for r in self._conn().execute(Q["all_workers"]):
            out.append(WorkerInfo(
                worker_id=r["id"], name=r["name"], hostname=r["hostname"], pid=r["pid"],
                started_at=ts(r["started_at"]), heartbeat_at=ts(r["heartbeat_at"]),
                processors=json.loads(r["processors"]), concurrency=r["concurrency"],
                running=json.loads(r["running"])))
        return out

    def claim(self, worker_pk: int, processors: dict[str, Any], capacity: int,
              held: dict[int, Held], only: set[str] | None = None,
              tenant_cap: int | None = None) -> ClaimResult:
        result = ClaimResult()
        with self._write() as conn:
            # The time once the write lock is held: read before it, a claim that waited for the lock would
            # write an older time than the claim before it onto the rate bucket, which then refilled twice.
            now = time.time()
            # The fence on claims too: a worker reaped since its last heartbeat must not lease items
            # under a pk that no reaper will ever look at again.
            if conn.execute("SELECT 1 FROM workers WHERE pk = ?", (worker_pk,)).fetchone() is None:
                return result
            rows = [r for r in conn.execute(Q["runnable_batches"])
                    if r["processor"] in processors and not r["failing"]
                    and (only is None or r["id"] in only)
                    and (r["items_pending"] > 0 or r["pk"] in held)]
            if not rows:
                for pk in held:
                    conn.execute(Q["delete_slots"], (worker_pk, pk))
                return result
            others: dict[int, int] = {}
            proc_used: dict[str, int] = {}
            tenant_used: dict[str, int] = {}
            for batch_pk, proc, n, tenant in conn.execute(Q["slots_of_others"], (worker_pk,)):
                others[batch_pk] = n
                proc_used[proc] = proc_used.get(proc, 0) + n
                tenant_used[tenant] = tenant_used.get(tenant, 0) + n
            tenant_room = None if tenant_cap is None else {
                r["tenant"]: max(0, tenant_cap - tenant_used.get(r["tenant"], 0)) for r in rows}
            proc_room = {name: max(0, p.concurrency - proc_used.get(name, 0))
                         for name, p in processors.items() if getattr(p, "concurrency", None)}
            # A rate-limited processor's batches can use no more slots than it has tokens for now.
            startable: dict[str, float] = {}
            for name, p in processors.items():
                limit = getattr(p, "rate_limit", None)
                if limit is not None:
                    bucket = conn.execute(Q["get_bucket"], (name,)).fetchone()
                    startable[name] = limits.level(bucket[0], bucket[1], now, limit) if bucket else limit.burst
            # A batch with a budget can start no more items than the budget pays for, counting those in flight.
            budgeted = {r["pk"]: budget_allowance(r, json.loads(r["spec"])) for r in rows if r["budget"] is not None}
            runnable = [Runnable(pk=r["pk"], processor=r["processor"], priority=r["priority"], tenant=r["tenant"],
                                 parallel=r["parallel"], pending=startable_items(
                                     r["items_pending"], startable.get(r["processor"]), budgeted.get(r["pk"])),
                                 slots_others=others.get(r["pk"], 0), last_claim_at=r["last_claim_at"])
                        for r in rows]
            plans = plan(runnable, held, capacity, proc_room, tenant_room)
            for r in rows:
                pk = r["pk"]
                p = plans[pk]
                want = p.claim
                limit = getattr(processors[r["processor"]], "rate_limit", None)
                if want and limit is not None:
                    bucket = conn.execute(Q["get_bucket"], (r["processor"],)).fetchone()
                    tokens, updated = (bucket[0], bucket[1]) if bucket else (limit.burst, now)
                    want, left = take_tokens(tokens, updated, now, want, limit)
                    conn.execute(Q["put_bucket"], (r["processor"], left, now))
                claimed: list[Claimed] = []
                if want:
                    claimed = self._claim_chunk(conn, worker_pk, r["first_item"], r["last_item"], want, now)
                    if claimed:
                        conn.execute(Q["count_claimed"], {"n": len(claimed), "now": now, "pk": pk})
                elif (r["items_pending"] == 0 or budgeted.get(pk) == 0) and r["items_running"] == 0:
                    self._settle(conn, pk, now)  # nothing left, or nothing the budget pays for: end or pause it
                if p.grant:
                    conn.execute(Q["upsert_slots"], (worker_pk, pk, p.grant))
                else:
                    conn.execute(Q["delete_slots"], (worker_pk, pk))
                result.grants[pk] = p.grant
                if claimed:
                    result.items[pk] = claimed
                if p.grant or claimed or pk in held:
                    spec = json.loads(r["spec"])
                    result.batches[pk] = BatchRuntime(
                        pk=pk, batch_id=r["id"], processor=r["processor"], params=spec.get("params") or {},
                        max_attempts=r["max_attempts"], status=r["status"],
                        cost_per_item=spec.get("cost_per_item") or 0.0,
                        pending=r["items_pending"] - len(claimed))
            for pk in held:
                if pk not in result.grants:
                    conn.execute(Q["delete_slots"], (worker_pk, pk))
        return result

    def lease_items(self, worker_pk: int, batch_id: str, seqs: list[int]) -> ClaimResult:
        now = time.time()
        result = ClaimResult()
        with self._write() as conn:
            row = conn.execute(Q["get_batch"], (batch_id,)).fetchone()
            if row is None:
                raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
            if states.is_final(row["status"]) or row["status"] == BatchStatus.CANCELLING \
                    or conn.execute("SELECT 1 FROM workers WHERE pk = ?", (worker_pk,)).fetchone() is None:
                return result
            first, total = row["first_item"], row["items_total"]
            ids = sorted({first + s - 1 for s in seqs if 1 <= s <= total})
            claimed: list[Claimed] = []
            if ids:
                marker = secrets.randbits(62)
                conn.execute("UPDATE items SET status = 1, worker = ?, claim = ?, attempts = attempts + 1 "
                             "WHERE id IN (SELECT value FROM json_each(?)) AND status = 0",
                             (worker_pk, marker, json.dumps(ids)))
                blob = conn.execute(Q["claimed_items"], {"first": first, "lo": ids[0], "hi": ids[-1],
                                                         "claim": marker}).fetchone()[0]
                claimed = sorted(json.loads(blob))
            if claimed:
                conn.execute(Q["count_claimed"], {"n": len(claimed), "now": now, "pk": row["pk"]})
                result.items[row["pk"]] = claimed
            spec = json.loads(row["spec"])
            result.batches[row["pk"]] = BatchRuntime(
                pk=row["pk"], batch_id=row["id"], processor=row["processor"], params=spec.get("params") or {},
                max_attempts=row["max_attempts"], status=row["status"], cost_per_item=spec.get("cost_per_item") or 0.0,
                pending=row["items_pending"] - len(claimed))
        return result

    def _claim_chunk(self, conn: sqlite3.Connection, worker_pk: int, first: int, last: int, n: int,
                     now: float) -> list[Claimed]:
        lo, hi, count = conn.execute(Q["claim_range"], {"first": first, "last": last, "now": now, "n": n}
                                     ).fetchone()
        if not count:
            return []
        marker = secrets.randbits(62)
        conn.execute(Q["claim_items"], {"worker": worker_pk, "claim": marker, "lo": lo, "hi": hi, "now": now})
        blob = conn.execute(Q["claimed_items"], {"first": first, "lo": lo, "hi": hi, "claim": marker}).fetchone()[0]
        claimed = json.loads(blob)  # lists in Claimed's field order
        claimed.sort()
        return claimed

    def record(self, worker_pk: int, outcomes: list[Outcome]) -> RecordResult:
        if not outcomes:
            return RecordResult()
        now = time.time()
        groups = _group(outcomes)
        try:
            blobs = {key: encode_outcomes(group) for key, group in groups.items()}
        except (TypeError, ValueError):
            # Some result is not JSON: those items fail instead (a rare path, so encode twice).
            groups = _group(sanitize_outcomes(outcomes))
            blobs = {key: encode_outcomes(group) for key, group in groups.items()}
        res = RecordResult()
        per_batch: dict[int, dict[str, float]] = {}
        durations: dict[int, list[int]] = {}
        with self._write() as conn:
            for (batch_pk, kind), group in groups.items():
                sql = _RECORD[kind]
                conn.execute("SAVEPOINT rec")
                n = conn.execute(sql, {"outcomes": blobs[(batch_pk, kind)], "worker": worker_pk}).rowcount
                if n == len(group):
                    accepted = group
                    conn.execute("RELEASE rec")
                else:
                    # Some leases were lost (the items were reclaimed): find out which, one by one.
                    conn.execute("ROLLBACK TO rec")
                    conn.execute("RELEASE rec")
                    accepted = [o for o in group if conn.execute(
                        sql, {"outcomes": encode_outcomes([o]), "worker": worker_pk}).rowcount == 1]
                res.accepted += len(accepted)
                res.refused += len(group) - len(accepted)
                c = per_batch.setdefault(batch_pk, {"ok": 0, "fail": 0, "retry": 0, "cost": 0.0})
                c[kind] += len(accepted)
                c["cost"] += sum(o[7] for o in accepted if o[7])
                if kind != RETRY:
                    durations.setdefault(batch_pk, []).extend(o[6] - o[5] for o in accepted)
            failpoints.hit("mid_commit")  # items written, counters not: the fault tests crash here
            stats: dict[str, Stats] = {}
            for batch_pk, c in per_batch.items():
                proc = conn.execute(Q["count_recorded"], {**c, "now": now, "pk": batch_pk}).fetchone()
                if proc is not None:
                    stats.setdefault(proc[0], Stats()).add(c, durations.get(batch_pk, ()))
                self._settle(conn, batch_pk, now)
            for proc, st in stats.items():
                self._add_stats(conn, proc, st)
        return res

    def _add_stats(self, conn: sqlite3.Connection, processor: str, st: Stats) -> None:
        old = conn.execute(Q["get_stats"], (processor,)).fetchone()
        buckets = st.merged(json.loads(old["buckets"]) if old else [])
        conn.execute(Q["put_stats"], {"processor": processor, "ok": st.ok, "fail": st.fail, "retry": st.retry,
                                      "dsum": st.duration_sum, "buckets": json.dumps(buckets)})

    def processor_stats(self) -> dict[str, ProcessorStats]:
        return {r["processor"]: ProcessorStats(succeeded=r["succeeded"], failed=r["failed"], retried=r["retried"],
                                               duration_sum=r["duration_sum"], buckets=json.loads(r["buckets"]))
                for r in self._conn().execute("SELECT * FROM processor_stats ORDER BY processor")}

    def tenant_usage(self, tenant: str) -> tuple[int, int]:
        queued, running = self._conn().execute(Q["tenant_usage"], (tenant,)).fetchone()
        return int(queued), int(running)

    def release(self, worker_pk: int, batch_pk: int, rowids: list[int]) -> None:
        if not rowids:
            return
        now = time.time()
        with self._write() as conn:
            self._release_rows(conn, worker_pk, batch_pk, rowids, now)

    def _release_rows(self, conn: sqlite3.Connection, worker_pk: int, batch_pk: int, rowids: list[int],
                      now: float) -> None:
        row = conn.execute(Q["batch_by_pk"], (batch_pk,)).fetchone()
        if row is None:
            return
        to = ITEM_CODE[states.ItemStatus.CANCELLED] if row["status"] == BatchStatus.CANCELLING else 0
        n = conn.execute(Q["release_items"], {"to": to, "ids": json.dumps(rowids), "worker": worker_pk}).rowcount
        if n:
            col = "items_cancelled" if to else "items_pending"
            conn.execute(f"UPDATE batches SET items_running = items_running - ?, {col} = {col} + ?, "
                         "attempts_total = attempts_total - ?, updated_at = ? WHERE pk = ?",
                         (n, n, n, now, batch_pk))
            self._settle(conn, batch_pk, now)

    def _release_all(self, conn: sqlite3.Connection, worker_pks: list[int], now: float,
                     lost: bool = False) -> tuple[int, int]:
        """Return every item leased to these workers to pending (or fail items lost too often).

        Returns (items, batches) released."""
        marks = ",".join("?" * len(worker_pks))
        items = batches = 0
        for b in conn.execute(Q["batches_with_running"]).fetchall():
            cancel = b["status"] == BatchStatus.CANCELLING
            limit = b["max_attempts"] + defaults.LOST_ATTEMPTS_GRACE
            rows = conn.execute(
                f"SELECT id, attempts FROM items WHERE id BETWEEN ? AND ? AND status = 1 AND worker IN ({marks})",
                (b["first_item"], b["last_item"], *worker_pks)).fetchall()
            if not rows:
                continue
            items += len(rows)
            batches += 1
            counts = {"pending": 0, "failed": 0, "cancelled": 0}
            for item_id, attempts in rows:
                if cancel:
                    to, col = 4, "cancelled"
                elif lost and attempts >= limit:
                    to, col = 3, "failed"
                else:
                    to, col = 0, "pending"
                err = None
                if to == 3:
                    err = json.dumps({"type": "WorkerLost", "attempt": attempts, "at": now,
                                      "message": f"the worker running this item was lost {attempts} times"})
                conn.execute("UPDATE items SET status = ?, worker = NULL, error = COALESCE(?, error), "
                             "finished_at = CASE WHEN ? = 3 THEN ? ELSE finished_at END WHERE id = ?",
                             (to, err, to, now, item_id))
                counts[col] += 1
            conn.execute("UPDATE batches SET items_running = items_running - ?, items_pending = items_pending + ?,"
                         " items_failed = items_failed + ?, items_cancelled = items_cancelled + ?, updated_at = ?"
                         " WHERE pk = ?", (len(rows), counts["pending"], counts["failed"], counts["cancelled"],
                                          now, b["pk"]))
            self._settle(conn, b["pk"], now)
        return items, batches

    def drop_slots(self, worker_pk: int, batch_pk: int) -> None:
        with self._write() as conn:
            conn.execute(Q["delete_slots"], (worker_pk, batch_pk))

    def reap(self, lease_seconds: float) -> Reaped:
        """Reclaim the items of workers that stopped heartbeating, or whose process is gone."""
        now = time.time()
        conn = self._conn()
        dead = []
        for r in conn.execute("SELECT pk, hostname, pid, pid_started, heartbeat_at FROM workers").fetchall():
            silent = r["heartbeat_at"] < now - lease_seconds
            gone = r["hostname"] == self._hostname and not process_alive(r["pid"], r["pid_started"])
            if silent or gone:
                dead.append(r["pk"])
        if not dead:
            return Reaped()
        with self._write() as conn:
            items, batches = self._release_all(conn, dead, now, lost=True)
            for pk in dead:
                conn.execute(Q["worker_slots_delete"], (pk,))
                conn.execute(Q["delete_worker"], (pk,))
        return Reaped(len(dead), items, batches)

    def batch_states(self, pks: Iterable[int]) -> dict[int, str]:
        rows = self._conn().execute(Q["batch_states"], (json.dumps(list(pks)),)).fetchall()
        return {r[0]: r[1] for r in rows}

    def wait_for_work(self, timeout: float) -> bool:
        """SQLite has no channel to announce work on: False at once, and the worker polls (see Store)."""
        return False

    # -- webhooks ----------------------------------------------------------------------------

    def enqueue_progress_webhooks(self, interval: float) -> int:
        """A batch.progress delivery for each running batch that asked for them, changed since its last one,
        and has had none for ``interval`` seconds."""
        args = {"since": time.time() - interval}
        if not self._conn().execute(Q["progress_candidates"], args).fetchone():
            return 0  # the usual answer, found without taking the write lock
        with self._write() as conn:
            rows = conn.execute(Q["progress_candidates"], args).fetchall()
            for row in rows:
                self._enqueue(conn, row, "batch.progress")
        return len(rows)

    def claim_deliveries(self, limit: int, lease_seconds: float) -> list[DueDelivery]:
        now = time.time()
        if not self._conn().execute(Q["due_deliveries"], {"now": now, "limit": 1}).fetchone():
            return []  # the usual answer, found without taking the write lock
        with self._write() as conn:
            rows = conn.execute(Q["due_deliveries"], {"now": now, "limit": limit}).fetchall()
            for r in rows:
                conn.execute(Q["lease_delivery"], {"until": now + lease_seconds, "id": r["id"]})
        return [DueDelivery(r["id"], r["batch_id"], r["tenant"], r["event"], r["url"], r["payload"],
                            r["created_at"], r["n"]) for r in rows]

    def finish_delivery(self, delivery_id: str, attempt: dict[str, Any], next_attempt_at: float | None,
                        delivered: bool) -> None:
        status = "delivered" if delivered else "pending" if next_attempt_at is not None else "failed"
        with self._write() as conn:
            conn.execute(Q["finish_delivery"], {"attempt": json.dumps(attempt), "status": status,
                                                "next": None if delivered else next_attempt_at,
                                                "now": time.time(), "id": delivery_id})

    def list_deliveries(self, batch_id: str) -> list[WebhookDelivery]:
        return [WebhookDelivery(
            delivery_id=r["id"], batch_id=r["batch_id"], event=r["event"], url=r["url"], status=r["status"],
            created_at=ts(r["created_at"]), next_attempt_at=ts(r["next_attempt_at"]) if r["status"] == "pending"
            else None, delivered_at=ts(r["delivered_at"]),
            attempts=[{**a, "at": ts(a["at"])} for a in json.loads(r["attempts"])])
            for r in self._conn().execute(Q["deliveries_of"], (batch_id,))]

    # -- API keys and settings -------------------------------------------------------------------

    def add_api_key(self, key_id: str, tenant: str, name: str | None, digest: str) -> ApiKeyInfo:
        now = time.time()
        with self._write() as conn:
            conn.execute(Q["add_api_key"], (key_id, tenant, name, digest, now))
        return ApiKeyInfo(key_id=key_id, tenant=tenant, name=name, created_at=ts(now))

    # -- idempotency keys --------------------------------------------------------------------

    def _take_idempotency_key(self, conn: sqlite3.Connection, tenant: str, key: str, request_hash: str, pk: int,
                              now: float) -> None:
        cur = conn.execute("INSERT INTO idempotency_keys (tenant, key, request_hash, batch_pk, created_at) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, key) DO NOTHING",
                           (tenant, key, request_hash, pk, now))
        if cur.rowcount == 0:  # raising rolls the batch back
            found = self._find_idempotency_key(conn, tenant, key)
            assert found is not None  # a key goes with its batch, in one transaction
            raise IdempotencyConflict(key, found.batch_id, found.request_hash)

    def _find_idempotency_key(self, conn: sqlite3.Connection, tenant: str, key: str) -> IdempotencyRecord | None:
        row = conn.execute("SELECT b.id, k.request_hash, k.created_at FROM idempotency_keys k "
                           "JOIN batches b ON b.pk = k.batch_pk WHERE k.tenant = ? AND k.key = ?",
                           (tenant, key)).fetchone()
        return IdempotencyRecord(row[0], row[1], row[2]) if row else None

    def find_idempotency_key(self, tenant: str, key: str) -> IdempotencyRecord | None:
        return self._find_idempotency_key(self._conn(), tenant, key)

    def find_api_key(self, digest: str) -> ApiKeyInfo | None:
        row = self._conn().execute(Q["find_api_key"], (digest,)).fetchone()
        return _key_info(row) if row else None

    def list_api_keys(self) -> list[ApiKeyInfo]:
        return [_key_info(r) for r in self._conn().execute("SELECT * FROM api_keys ORDER BY created_at, id")]

    def revoke_api_key(self, key_id: str) -> ApiKeyInfo:
        with self._write() as conn:
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                         (time.time(), key_id))
            row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no API key {key_id!r}", kind="api_key", ident=key_id)
        return _key_info(row)

    def get_setting(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (f"setting:{key}",)).fetchone()
        return row[0] if row else None

    def put_setting_once(self, key: str, value: str) -> str:
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (f"setting:{key}", value))
            return str(conn.execute("SELECT value FROM meta WHERE key = ?", (f"setting:{key}",)).fetchone()[0])


def _key_info(r: sqlite3.Row) -> ApiKeyInfo:
    return ApiKeyInfo(key_id=r["id"], tenant=r["tenant"], name=r["name"], created_at=ts(r["created_at"]),
                      revoked_at=ts(r["revoked_at"]))


_RECORD = {OK: Q["record_ok"], FAIL: Q["record_fail"], RETRY: Q["record_retry"]}


def _group(outcomes: list[Outcome]) -> dict[tuple[int, str], list[Outcome]]:
    """Outcomes by (batch_pk, kind): one statement per group."""
    groups: dict[tuple[int, str], list[Outcome]] = {}
    for o in outcomes:
        key = (o[0], o[2])
        g = groups.get(key)
        if g is None:
            groups[key] = [o]
        else:
            g.append(o)
    return groups


def _check_file(path: Path) -> None:
    """Refuse a file that is not a whole batchyard store, read through a read-only connection: opening it as
    a store would switch it to WAL, writing to a file that may be someone else's. (Never ``open()`` it:
    closing any descriptor of the file drops the locks this process's SQLite connections hold on it, and
    another process, believing itself the last, would then delete the WAL under them.)"""
    advice = "batchyard will not start on it: restore it from a backup, or move it away to start a new store"
    size = path.stat().st_size
    if size == 0:
        raise StoreDamaged(f"store {path} is damaged: the file is empty (truncated?); {advice}")
    try:
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            pages = probe.execute("PRAGMA page_count").fetchone()[0] * probe.execute("PRAGMA page_size").fetchone()[0]
        finally:
            probe.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
            raise StoreDamaged(f"store {path} is not a batchyard store ({exc}: overwritten?); {advice}") from None
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CORRUPT:
            raise StoreDamaged(f"store {path} is damaged ({exc}); {advice}") from None
        raise
    # Without a WAL the file holds every page the header counts: shorter, it was cut short. (With one, the
    # count includes pages still in the WAL, and SQLite reports real damage itself.)
    wal = Path(f"{path}-wal")
    if size < pages and not (wal.exists() and wal.stat().st_size > 0):
        raise StoreDamaged(f"store {path} is damaged: truncated to {size} bytes of {pages}; {advice}")
    if "meta" not in tables:  # every store has it from its first commit (new ones are made whole elsewhere)
        shown = ", ".join(tables[:5]) or "none"
        raise StoreDamaged(f"store {path} is not a batchyard store (an SQLite database whose tables are: "
                           f"{shown}); {advice}")


def _statements(sql: str) -> list[str]:
    code = re.sub(r"--[^\n]*", "", sql)  # schema files hold no string literals with "--"
    return [s.strip() for s in code.split(";") if s.strip()]


def _batch_info(r: sqlite3.Row) -> BatchInfo:
    active = r["active_seconds"]
    if r["status"] == BatchStatus.RUNNING and r["running_since"]:
        active += max(0.0, time.time() - r["running_since"])
    return batch_info(r, json.loads(r["spec"]), active, ts(r["created_at"]), ts(r["started_at"]),
                      ts(r["completed_at"]), ts(r["updated_at"]))


_KEY = re.compile(r'("(?:[^"\\]|\\.)*")|([^.]+)')


def _dotted(path: str) -> str:
    """json_tree's path (keys that are not plain identifiers come quoted, JSON-escaped:
    ``"offset_seconds".x``) as the dotted field name PostgreSQL gives (``offset_seconds.x``)."""
    return ".".join(json.loads(quoted) if quoted else plain for quoted, plain in _KEY.findall(path))


def _item_info(batch_id: str, first: int, r: sqlite3.Row) -> ItemInfo:
    # construct: these rows were validated on the way in, and exports read millions of them.
    started, finished = r["started_at"], r["finished_at"]
    loads = json.loads
    errors = r["errors"]
    return construct(
        ItemInfo, batch_id=batch_id, item_id=r["key"] if r["key"] is not None else str(r["id"] - first + 1),
        seq=r["id"] - first + 1, status=ITEM_FROM_CODE[r["status"]], attempts=r["attempts"],
        payload=loads(r["payload"]), result=loads(r["result"]) if r["result"] else None,
        error=error_from(loads(r["error"])) if r["error"] else None,
        errors=[e for e in map(error_from, loads(errors)) if e] if errors else [],
        started_at=ts(started), finished_at=ts(finished),
        duration_s=round(finished - started, 6) if started and finished else None,
        cost=r["cost"], not_before=ts(r["not_before"]))


def open_sqlite(url_or_path: str) -> SQLiteStore:
    path = url_or_path
    if path.startswith("sqlite:///"):
        path = path[len("sqlite:///"):]
    elif path.startswith("sqlite://"):
        raise ConfigError(f"store URL {url_or_path!r}: use sqlite:///relative/path or sqlite:////absolute/path")
    return SQLiteStore(path)
