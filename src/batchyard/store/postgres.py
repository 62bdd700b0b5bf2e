"""The PostgreSQL store: several worker machines on one database.

PostgreSQL is the coordinator, nothing else is:

* Claims lease items with ``FOR UPDATE SKIP LOCKED`` from a partial index of pending items, in chunks;
  the batch counters change in the same statement. The planning step (slots, rate buckets) runs under
  a transaction-level advisory lock, since two planners reading the same free slots would both grant
  them; claims are chunked, so that lock is taken a few times a second, not per item.
* Outcomes are recorded in group commits: one ``UPDATE ... FROM json_array_elements(...)`` per batch
  and chunk, fenced by the lease holder's worker pk (an identity, never reused).
* Leases are judged by the database clock: heartbeats are written with ``clock_timestamp()`` and reaping
  compares them to it, so a worker with a skewed clock neither reaps others early nor lingers.
* ``create_batch`` and the start/resume/retry transitions ``NOTIFY batchyard_work``; ``wait_for_work``
  LISTENs on a dedicated connection so idle workers start new work at once instead of at their next poll.
* Every writer locks a batch row before any of its items, and reaping/unregistering take the claim lock
  first: one lock order, so transactions wait for each other but never deadlock. Group commits are the
  exception, for speed: they lock their worker's row, then their leased items, then the batch row last
  (see ``record``), so that workers sharing a batch commit in parallel.

The schema is only created automatically in an empty database (or schema); anything else that is older
or newer than this code refuses to open with ``SchemaVersionError``, and ``batchyard db upgrade`` migrates.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from itertools import islice
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from batchyard.core import defaults, failpoints, limits, states
from batchyard.core.errors import (
    ConfigError,
    InputError,
    InvalidTransition,
    NotFound,
    SchemaVersionError,
    StoreUnavailable,
)
from batchyard.core.execute import encode_outcomes, sanitize_outcomes
from batchyard.core.limits import take_tokens
from batchyard.core.models import (
    PRIORITY_RANK,
    BatchInfo,
    BatchSpec,
    FailurePolicy,
    ItemInfo,
    NewItem,
    TimelinePoint,
    WorkerInfo,
    new_batch_id,
    timeline_bucket,
    timeline_points,
)
from batchyard.core.scheduling import Held, Runnable, plan
from batchyard.core.states import ITEM_CODE, ITEM_FROM_CODE, BatchStatus
from batchyard.core.store import RETRY, BatchRuntime, Claimed, ClaimResult, Outcome, Reaped, RecordResult
from batchyard.store import safe_url

# The SQLite store's helpers for what is not SQL: whether a worker process on this host is alive,
# how a stored error becomes an ItemError, which final status sends which webhook event, and one
# group commit's contribution to a processor's statistics (its counts and duration histogram).
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
from batchyard.store.postgres_files import PostgresFiles
from batchyard.store.postgres_resources import PostgresResources
from batchyard.store.postgres_service import PostgresService
from batchyard.store.sql import migrations, queries

Q = queries("postgres")
CHANNEL = "batchyard_work"
POOL_MAX = 10              # connections per store: the pump, request threads, export threads
CONNECT_TIMEOUT = 10       # seconds to reach the server before giving up with a clear error
_Row = dict[str, Any]
# PostgreSQL text and jsonb cannot hold NUL: a \u0000 escape (not one preceded by an escaped
# backslash) becomes U+FFFD rather than failing a whole chunk.
_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _no_nul(text: str) -> str:
    return _NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


class PostgresStore(PostgresFiles, PostgresService, PostgresResources):
    """A Store over one PostgreSQL database (or one schema of it, by ``options=-csearch_path=...``)."""

    dialect = "postgres"
    # ``wait_for_work`` really waits for announcements: idle workers rely on it and claim rarely otherwise.
    announces_work = True

    def __init__(self, url: str) -> None:
        self.url = url
        self._conninfo = _conninfo(url)
        self._hostname = socket.gethostname()
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()
        self._closed = False
        with _direct(self._conninfo, url) as conn:
            _migrate(conn, url, upgrade=False)
        self._pool: ConnectionPool[psycopg.Connection[_Row]] = ConnectionPool(
            self._conninfo, min_size=1, max_size=POOL_MAX, open=True, name="batchyard",
            kwargs={"autocommit": True, "row_factory": dict_row}, timeout=CONNECT_TIMEOUT)

    # -- connections -------------------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[_Row]]:
        with self._available(), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[_Row]]:
        with self._available(), self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _available(self) -> Iterator[None]:
        """The server restarting, the network, a full disk, a deadlock victim (psycopg's OperationalError), no
        connection to be had: transient, so ``StoreUnavailable``, which a worker waits out and the REST API
        answers 503 to. (The pool drops a connection that broke, so the next call gets a new one.)"""
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"PostgreSQL store {_safe_url(self.url)} unavailable: {str(exc).strip()}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with suppress(Exception):
            self._pool.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(Exception):
                listener.close()

    # -- schema ------------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._conn() as conn:
            row = conn.execute(Q["schema_version"]).fetchone()
        return int(row["value"]) if row else 0

    # -- notifications -----------------------------------------------------------------------

    def wait_for_work(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds on LISTEN; True as soon as new or resumed work is announced.

        One dedicated connection per store (a pooled one would lose its LISTEN when handed to others).
        Notifications that arrived since the last call are still queued on it, so none is missed
        between two waits; all that are queued are drained, so one burst wakes a waiter once. A call that
        (re)connects returns True at once: whatever was announced before the LISTEN took effect was not
        heard, so the caller should look for work once now rather than at its next slow poll.
        """
        if self._closed or not self._listen_lock.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            conn = self._listener
            if conn is None:
                conn = psycopg.connect(self._conninfo, autocommit=True)
                conn.execute(f"LISTEN {CHANNEL}")
                self._listener = conn
                return True
            got = False
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                got = True
            if got:
                for _ in conn.notifies(timeout=0):
                    pass
            return got
        except psycopg.Error:
            # The server went away or the store is closing: report no work; the next call reconnects.
            listener, self._listener = self._listener, None
            if listener is not None:
                with suppress(Exception):
                    listener.close()
            return False
        finally:
            self._listen_lock.release()

    @staticmethod
    def _notify(conn: psycopg.Connection[_Row], batch_id: str) -> None:
        conn.execute(Q["notify_work"], {"batch_id": batch_id})  # delivered when the transaction commits

    # -- batches -----------------------------------------------------------------------------

    def create_batch(self, spec: BatchSpec, items: Iterable[NewItem | tuple[str | None, Any]],
                     start: bool = True) -> BatchInfo:
        batch_id = new_batch_id()
        dumps = json.dumps
        spec_json = spec.model_dump_json(include=set(_SPEC_KEYS))
        with self._tx() as conn:
            row = conn.execute(Q["insert_batch"], {
                "id": batch_id, "tenant": spec.tenant, "processor": spec.processor,
                "status": BatchStatus.RUNNING.value if start else BatchStatus.PENDING.value,
                "priority": PRIORITY_RANK[spec.priority], "parallel": spec.parallel,
                "max_attempts": spec.max_attempts, "spec": spec_json, "fingerprint": spec.fingerprint,
                "start": start}).fetchone()
            assert row is not None
            pk = row["pk"]
            if spec.idempotency is not None:  # first: a racing retry waits here for this transaction, then conflicts
                self._take_idempotency_key(conn, spec.tenant, spec.idempotency.key, spec.idempotency.request_hash, pk)
            n = 0
            rows = iter(items)
            while chunk := list(islice(rows, defaults.INSERT_CHUNK)):
                try:
                    blob = dumps(chunk)  # (key, payload) tuples encode as they are: no per-item work
                except TypeError:  # NewItem values, or a payload that is not JSON
                    try:
                        blob = dumps([(c.key, c.payload) if isinstance(c, NewItem) else c for c in chunk])
                    except TypeError as exc:
                        raise InputError(f"an item is not JSON-serialisable: {exc}") from None
                conn.execute(Q["insert_items"], {"pk": pk, "first": n + 1, "items": _no_nul(blob)})
                n += len(chunk)
            conn.execute(Q["finish_insert"], {"n": n, "pk": pk, "budget": spec.budget,
                                              "estimated": spec.cost_estimated})
            if start:
                if n == 0:
                    self._settle(conn, self._lock_batch(conn, pk))
                else:
                    self._notify(conn, batch_id)
        return self.get_batch(batch_id)

    def get_batch(self, batch_id: str) -> BatchInfo:
        with self._conn() as conn:
            row = conn.execute(Q["get_batch"], {"id": batch_id}).fetchone()
        if row is None:
            raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
        return _batch_info(row)

    def find_resumable(self, fingerprint: str) -> BatchInfo | None:
        with self._conn() as conn:
            row = conn.execute(Q["find_resumable"], {"fingerprint": fingerprint}).fetchone()
        return _batch_info(row) if row else None

    def list_batches(self, *, status: str | None = None, processor: str | None = None,
                     tag: str | None = None, limit: int = 100, before: str | None = None,
                     tenant: str | None = None, created_after: float | None = None,
                     created_before: float | None = None, updated_after: float | None = None) -> list[BatchInfo]:
        # Following changes reads oldest change first, so a page cut by ``limit`` leaves nothing behind
        # the last updated_at it returned; listing reads newest batch first.
        order = " ORDER BY updated_at, pk" if updated_after is not None else " ORDER BY pk DESC"
        with self._conn() as conn:
            rows = conn.execute(Q["list_batches"] + order + " LIMIT %(limit)s", {
                "status": status or None, "processor": processor or None, "tag": tag or None,
                "limit": limit, "before": before or None, "tenant": tenant or None,
                "after": created_after, "before_time": created_before, "updated_after": updated_after}).fetchall()
        return [_batch_info(r) for r in rows]

    def transition(self, batch_id: str, action: str, reason: str | None = None) -> BatchInfo:
        if action not in states.USER_ACTIONS:
            raise ValueError(f"{action!r} is not an action a user can take; expected one of "
                             f"{', '.join(sorted(states.USER_ACTIONS))}")
        if action == "pause":
            reason = states.PauseReason(reason or states.PauseReason.USER).value
        with self._tx() as conn:
            row = conn.execute(Q["get_batch_for_update"], {"id": batch_id}).fetchone()
            if row is None:
                raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
            if action == "retry" and row["status"] in (BatchStatus.COMPLETED, BatchStatus.FAILED) \
                    and row["items_failed"] == 0:
                return _batch_info({**row, "db_now": 0.0})  # final: no running time to add
            target = states.apply(batch_id, row["status"], action)
            row = self._set_status(conn, row, target, pause_reason=reason if action == "pause" else None)
            if action == "cancel":
                row = conn.execute(Q["cancel_pending"], {"pk": row["pk"], "reason": reason or "cancelled by user"}
                                   ).fetchone()
            elif action == "retry":
                row = conn.execute(Q["retry_failed"], {"pk": row["pk"]}).fetchone()
            assert row is not None
            self._settle(conn, row)
            if target == BatchStatus.RUNNING:
                self._notify(conn, batch_id)
        return self.get_batch(batch_id)

    def set_budget(self, batch_id: str, budget: float | None) -> BatchInfo:
        with self._tx() as conn:
            row = conn.execute(Q["get_batch_for_update"], {"id": batch_id}).fetchone()
            if row is None:
                raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
            self._settle(conn, conn.execute(Q["set_budget"], {"pk": row["pk"], "budget": budget}).fetchone())
        return self.get_batch(batch_id)

    def _lock_batch(self, conn: psycopg.Connection[_Row], pk: int) -> _Row | None:
        return conn.execute(Q["batch_by_pk_for_update"], {"pk": pk}).fetchone()

    def _set_status(self, conn: psycopg.Connection[_Row], row: _Row, target: str,
                    pause_reason: str | None = None) -> _Row:
        """The guarded write of a batch status: from the status read, or not at all."""
        new = conn.execute(Q["set_batch_status"], {"pk": row["pk"], "from": row["status"], "to": str(target),
                                                   "pause_reason": pause_reason}).fetchone()
        if new is None:  # cannot happen while the row is locked; kept as the compare-and-set guard
            raise InvalidTransition("batch", row["id"], row["status"], str(target))
        if target != row["status"] and target in FINAL_EVENTS and (new["spec"].get("webhook") or None):
            self._enqueue(conn, new, FINAL_EVENTS[BatchStatus(target)])
        return new

    @staticmethod
    def _snapshot(row: _Row) -> BatchInfo:
        """A batch row as BatchInfo; a row read without the database clock is taken as not running."""
        return _batch_info(row if "db_now" in row else {**row, "db_now": 0.0})

    def _settle(self, conn: psycopg.Connection[_Row], row: _Row | None) -> None:
        """End the batch if every item is final; trip its failure policy if it says so.

        ``row`` is the batch row as locked by the caller's transaction. A batch that is cancelling, or
        whose failure policy tripped, runs nothing more: items that come back to pending (a retry
        outcome, a release, a reaped worker) are cancelled here.
        """
        if row is None:
            return
        pk = row["pk"]
        if row["status"] == BatchStatus.RUNNING and not row["failing"] and row["items_failed"]:
            policy = FailurePolicy.model_validate(row["spec"].get("failure_policy") or {})
            why = policy.tripped(row["items_failed"], row["items_total"])
            if why:
                row = conn.execute(Q["mark_failing"], {"pk": pk, "why": why}).fetchone() or row
        if row["items_pending"] and (row["failing"] or row["status"] == BatchStatus.CANCELLING):
            row = conn.execute(Q["cancel_pending"], {"pk": pk, "reason": None}).fetchone() or row
        if row["status"] == BatchStatus.RUNNING and not row["failing"] and row["budget"] is not None \
                and budget_reached(row, row["spec"]):
            # Not one more item fits the budget and none is in flight: pause, saying why.
            self._set_status(conn, row, states.apply(row["id"], row["status"], "pause"),
                             pause_reason=states.PauseReason.BUDGET_REACHED.value)
            return
        action = states.settle(row["status"], row["items_pending"], row["items_running"], bool(row["failing"]))
        if action is not None:
            self._set_status(conn, row, states.apply(row["id"], row["status"], action))

    def delete_batch(self, batch_id: str) -> None:
        with self._tx() as conn:
            row = conn.execute(Q["get_batch_for_update"], {"id": batch_id}).fetchone()
            if row is None:
                raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
            if not states.is_final(row["status"]):
                raise InvalidTransition("batch", batch_id, row["status"], "delete")
            conn.execute(Q["delete_batches"], {"pks": [row["pk"]]})

    def cleanup(self, older_than: float) -> list[str]:
        with self._tx() as conn:
            rows = conn.execute(Q["old_final_batches"], {"before": older_than}).fetchall()
            if rows:
                conn.execute(Q["delete_batches"], {"pks": [r["pk"] for r in rows]})
        return [r["id"] for r in rows]

    # -- items -------------------------------------------------------------------------------

    def _batch_row(self, conn: psycopg.Connection[_Row], batch_id: str) -> _Row:
        row = conn.execute(Q["get_batch"], {"id": batch_id}).fetchone()
        if row is None:
            raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
        return row

    def iter_items(self, batch_id: str, *, status: str | None = None, after_seq: int = 0,
                   limit: int | None = None) -> Iterator[ItemInfo]:
        with self._conn() as conn:
            pk = self._batch_row(conn, batch_id)["pk"]
        code = ITEM_CODE[states.ItemStatus(status)] if status else None
        sql = Q["items_page"] if code is None else Q["items_page_status"]
        cursor = after_seq
        left = limit if limit is not None else float("inf")
        while left > 0:
            # A connection per page: a slow reader (an export over HTTP) must not hold one for long.
            with self._conn() as conn:
                page = conn.execute(sql, {"pk": pk, "after": cursor, "status": code,
                                          "limit": int(min(1000, left))}).fetchall()
            if not page:
                return
            for r in page:
                yield _item_info(batch_id, r)
            left -= len(page)
            cursor = page[-1]["seq"]

    def get_item(self, batch_id: str, item_id: str) -> ItemInfo:
        with self._conn() as conn:
            b = self._batch_row(conn, batch_id)
            r = conn.execute(Q["item_by_key"], {"pk": b["pk"], "key": item_id}).fetchone()
            if r is None and item_id.isascii() and item_id.isdigit() and 1 <= int(item_id) <= b["items_total"]:
                r = conn.execute(Q["item_by_seq"], {"pk": b["pk"], "seq": int(item_id)}).fetchone()
        if r is None:
            raise NotFound(f"no item {item_id!r} in batch {batch_id!r}", kind="item", ident=item_id)
        return _item_info(batch_id, r)

    def timeline(self, batch_id: str, bucket_seconds: float | None = None) -> list[TimelinePoint]:
        with self._conn() as conn:
            row = self._batch_row(conn, batch_id)
            # The width from the batch's own times (one pass over its items, not two to find their ends)
            end = row["completed_at"].timestamp() if row["completed_at"] else row["db_now"]
            span = end - (row["started_at"] or row["created_at"]).timestamp()
            bucket = timeline_bucket(span, bucket_seconds)
            rows = conn.execute(Q["timeline"], {"pk": row["pk"], "bucket": bucket}).fetchall()
        return timeline_points(((r["n"], r["ok"], r["failed"]) for r in rows), bucket)

    def result_stats(self, batch_id: str, limit: int = 1000) -> dict[str, dict[str, float]]:
        """count/mean/min/max/sum of every numeric field in the succeeded items' results."""
        with self._conn() as conn:
            pk = self._batch_row(conn, batch_id)["pk"]
            rows = conn.execute(Q["result_stats"], {"pk": pk, "limit": limit}).fetchall()
        out: dict[str, dict[str, float]] = {}
        for r in sorted(rows, key=lambda r: r["path"]):
            num = int if r["integral"] else float
            total = num(r["total"])
            out[r["path"]] = {"count": r["n"], "mean": float(r["total"] / Decimal(r["n"])),
                              "min": num(r["lo"]), "max": num(r["hi"]), "sum": total}
        return out

    # -- workers -----------------------------------------------------------------------------

    def register_worker(self, name: str, processors: list[str], concurrency: int) -> int:
        with self._conn() as conn:
            row = conn.execute(Q["register_worker"], {
                "id": uuid.uuid4().hex, "name": name, "hostname": self._hostname, "pid": os.getpid(),
                "pid_started": psutil.Process().create_time(), "processors": json.dumps(sorted(processors)),
                "concurrency": concurrency}).fetchone()
        assert row is not None
        return int(row["pk"])

    def heartbeat(self, worker_pk: int, running: dict[str, int]) -> bool:
        with self._conn() as conn:
            return conn.execute(Q["heartbeat"], {"pk": worker_pk, "running": json.dumps(running)}).rowcount == 1

    def unregister_worker(self, worker_pk: int) -> None:
        with self._tx() as conn:
            self._remove_workers(conn, [worker_pk], lost=False)

    def list_workers(self) -> list[WorkerInfo]:
        with self._conn() as conn:
            rows = conn.execute(Q["all_workers"]).fetchall()
        return [WorkerInfo(worker_id=r["id"], name=r["name"], hostname=r["hostname"], pid=r["pid"],
                           started_at=r["started_at"], heartbeat_at=r["heartbeat_at"],
                           processors=r["processors"], concurrency=r["concurrency"], running=r["running"])
                for r in rows]

    def reap(self, lease_seconds: float) -> Reaped:
        """Remove workers whose lease expired by the database clock, or whose process on this host is
        gone, and return their items to pending."""
        with self._conn() as conn:
            rows = conn.execute(Q["reap_candidates"], {"lease": float(lease_seconds)}).fetchall()
        dead = [r["pk"] for r in rows
                if r["silent"] or (r["hostname"] == self._hostname and not process_alive(r["pid"], r["pid_started"]))]
        if not dead:
            return Reaped()
        with self._tx() as conn:
            return self._remove_workers(conn, dead, lost=True)

    def _remove_workers(self, conn: psycopg.Connection[_Row], worker_pks: list[int], *, lost: bool) -> Reaped:
        """Delete workers, their slots and leases (items go back to pending, or fail if lost too often).

        The claim lock first, then the worker rows, then each batch before its items: the order claims
        and records also keep. The worker rows are deleted before anything else, so two reapers never
        both release the same worker's items.
        """
        conn.execute(Q["claim_lock"])
        gone = [r["pk"] for r in conn.execute(Q["delete_workers"], {"pks": worker_pks})]
        if not gone:
            return Reaped()
        conn.execute(Q["delete_worker_slots"], {"pks": gone})
        batch_pks = [r["pk"] for r in conn.execute(Q["batches_with_running"])]
        items = batches = returned = 0
        for b in conn.execute(Q["lock_batches"], {"pks": batch_pks}).fetchall() if batch_pks else []:
            row = conn.execute(Q["release_leased"], {
                "pk": b["pk"], "workers": gone, "cancel": b["status"] == BatchStatus.CANCELLING,
                "lost": lost, "limit": b["max_attempts"] + defaults.LOST_ATTEMPTS_GRACE}).fetchone()
            if row is not None and row["released"]:
                items += row["released"]
                batches += 1
                returned += row["returned"]
                self._settle(conn, row)
        if returned:
            self._notify(conn, "")  # other workers can take these items now
        return Reaped(len(gone), items, batches)

    def batch_states(self, pks: Iterable[int]) -> dict[int, str]:
        with self._conn() as conn:
            rows = conn.execute(Q["batch_states"], {"pks": list(pks)}).fetchall()
        return {r["pk"]: r["status"] for r in rows}

    def drop_slots(self, worker_pk: int, batch_pk: int) -> None:
        with self._conn() as conn:
            conn.execute(Q["delete_slots"], {"worker": worker_pk, "pk": batch_pk})

    # -- claims and outcomes -----------------------------------------------------------------

    def claim(self, worker_pk: int, processors: dict[str, Any], capacity: int,
              held: dict[int, Held], only: set[str] | None = None,
              tenant_cap: int | None = None) -> ClaimResult:
        result = ClaimResult()
        with self._tx() as conn:
            conn.execute(Q["claim_lock"])
            # The fence on claims too: a worker reaped since its last heartbeat must not lease items
            # under a pk that no reaper will ever look at again. (Reaps take the claim lock first.)
            if conn.execute(Q["worker_exists"], {"pk": worker_pk}).fetchone() is None:
                return result
            all_rows = conn.execute(Q["runnable_batches"]).fetchall()
            rows = [r for r in all_rows
                    if r["processor"] in processors and not r["failing"]
                    and (only is None or r["id"] in only)
                    and (r["items_pending"] > 0 or r["pk"] in held)]
            if not rows:
                if held:
                    conn.execute(Q["delete_slots_many"], {"worker": worker_pk, "pks": list(held)})
                return result
            now = rows[0]["db_now"]  # the database clock, read after the lock: buckets refill by it
            others: dict[int, int] = {}
            proc_used: dict[str, int] = {}
            tenant_used: dict[str, int] = {}
            for r in conn.execute(Q["slots_of_others"], {"worker": worker_pk}):
                others[r["batch_pk"]] = r["slots"]
                proc_used[r["processor"]] = proc_used.get(r["processor"], 0) + r["slots"]
                tenant_used[r["tenant"]] = tenant_used.get(r["tenant"], 0) + r["slots"]
            tenant_room = None if tenant_cap is None else {
                r["tenant"]: max(0, tenant_cap - tenant_used.get(r["tenant"], 0)) for r in rows}
            proc_room = {name: max(0, p.concurrency - proc_used.get(name, 0))
                         for name, p in processors.items() if getattr(p, "concurrency", None)}
            rate = {name: p.rate_limit for name, p in processors.items() if getattr(p, "rate_limit", None)}
            buckets: dict[str, tuple[float, float]] = {}
            if rate:
                for b in conn.execute(Q["get_buckets"], {"names": list(rate)}):
                    buckets[b["processor"]] = (b["tokens"], b["updated_at"])
            # A rate-limited processor's batches can use no more slots than it has tokens for now.
            startable = {name: limits.level(*buckets[name], now, lim) if name in buckets else lim.burst
                         for name, lim in rate.items()}
            # A batch with a budget can start no more items than the budget pays for, counting those in flight.
            # (Its counters were read under the claim lock, which every claim holds: no other claim moved them.)
            budgeted = {r["pk"]: budget_allowance(r, r["spec"]) for r in rows if r["budget"] is not None}
            runnable = [Runnable(pk=r["pk"], processor=r["processor"], priority=r["priority"], tenant=r["tenant"],
                                 parallel=r["parallel"], pending=startable_items(
                                     r["items_pending"], startable.get(r["processor"]), budgeted.get(r["pk"])),
                                 slots_others=others.get(r["pk"], 0), last_claim_at=r["last_claim_at"])
                        for r in rows]
            plans = plan(runnable, held, capacity, proc_room, tenant_room)
            # Batches with nothing left to start, or nothing their budget pays for, and none in flight: to end
            # or pause.
            idle = {r["pk"] for r in rows
                    if (r["items_pending"] == 0 or budgeted.get(r["pk"]) == 0) and r["items_running"] == 0}
            # Lock the batches this claim writes to, in pk order (as every writer does), and check
            # they still run: a pause or cancel may have committed since they were read.
            touch = [r["pk"] for r in rows if plans[r["pk"]].claim or r["pk"] in idle]
            live: dict[int, bool] = {}
            if touch:
                for b in conn.execute(Q["lock_batches"], {"pks": touch}):
                    live[b["pk"]] = b["status"] == BatchStatus.RUNNING and not b["failing"]
            grant_pks: list[int] = []
            grant_slots: list[int] = []
            for r in rows:
                pk = r["pk"]
                p = plans[pk]
                alive = live.get(pk, pk not in touch)
                grant = p.grant if alive else 0
                want = p.claim if alive else 0
                limit = rate.get(r["processor"])
                if want and limit is not None:
                    tokens, updated = buckets.get(r["processor"], (limit.burst, now))
                    want, left = take_tokens(tokens, updated, now, want, limit)
                    buckets[r["processor"]] = (left, now)
                    conn.execute(Q["put_bucket"], {"processor": r["processor"], "tokens": left, "now": now})
                claimed: list[Claimed] = []
                if want:
                    got = conn.execute(Q["claim_items"], {"pk": pk, "n": want, "worker": worker_pk}).fetchone()
                    claimed = (got and got["json_agg"]) or []
                elif alive and pk in idle:
                    self._settle(conn, self._lock_batch(conn, pk))  # nothing left: end it (or pause it)
                if grant:
                    grant_pks.append(pk)
                    grant_slots.append(grant)
                result.grants[pk] = grant
                if claimed:
                    result.items[pk] = claimed
                if grant or claimed or pk in held:
                    spec = r["spec"]
                    result.batches[pk] = BatchRuntime(
                        pk=pk, batch_id=r["id"], processor=r["processor"], params=spec.get("params") or {},
                        max_attempts=r["max_attempts"], status=r["status"],
                        cost_per_item=spec.get("cost_per_item") or 0.0,
                        pending=r["items_pending"] - len(claimed))
            if grant_pks:
                conn.execute(Q["upsert_slots"], {"worker": worker_pk, "pks": grant_pks, "slots": grant_slots})
            drop = [pk for pk in {*held, *result.grants} if not result.grants.get(pk)]
            if drop:
                conn.execute(Q["delete_slots_many"], {"worker": worker_pk, "pks": drop})
        return result

    def lease_items(self, worker_pk: int, batch_id: str, seqs: list[int]) -> ClaimResult:
        result = ClaimResult()
        with self._tx() as conn:
            conn.execute(Q["claim_lock"])  # as claims: a worker reaped meanwhile must not lease
            row = conn.execute(Q["get_batch_for_update"], {"id": batch_id}).fetchone()
            if row is None:
                raise NotFound(f"no batch {batch_id!r}", kind="batch", ident=batch_id)
            if states.is_final(row["status"]) or row["status"] == BatchStatus.CANCELLING \
                    or conn.execute(Q["worker_exists"], {"pk": worker_pk}).fetchone() is None:
                return result
            wanted = sorted({s for s in seqs if 1 <= s <= row["items_total"]})
            got = conn.execute(Q["lease_items"], {"pk": row["pk"], "seqs": wanted, "worker": worker_pk}
                               ).fetchone() if wanted else None
            claimed: list[Claimed] = (got and got["json_agg"]) or []
            if claimed:
                result.items[row["pk"]] = claimed
            spec = row["spec"]
            result.batches[row["pk"]] = BatchRuntime(
                pk=row["pk"], batch_id=row["id"], processor=row["processor"], params=spec.get("params") or {},
                max_attempts=row["max_attempts"], status=row["status"], cost_per_item=spec.get("cost_per_item") or 0.0,
                pending=row["items_pending"] - len(claimed))
        return result

    def record(self, worker_pk: int, outcomes: list[Outcome]) -> RecordResult:
        if not outcomes:
            return RecordResult()
        groups: dict[int, list[Outcome]] = {}
        for o in outcomes:
            groups.setdefault(o[0], []).append(o)
        try:
            blobs = {pk: encode_outcomes(group) for pk, group in groups.items()}
        except (TypeError, ValueError):
            # Some result is not JSON: those items fail instead (a rare path, so encode twice).
            groups = {}
            for o in sanitize_outcomes(outcomes):
                groups.setdefault(o[0], []).append(o)
            blobs = {pk: encode_outcomes(group) for pk, group in groups.items()}
        res = RecordResult()
        stats: dict[str, Stats] = {}
        with self._tx() as conn:
            # Not the batch rows first, unlike every other writer: each batch's items, then its row (the
            # record statement updates the counters after the items), so that the group commits of workers
            # sharing a batch overlap, each holding the batch row only for its counter update. That cannot
            # deadlock: the writers that lock a batch row and then items never wait on items leased to a
            # live worker (claims skip locked rows; cancel and retry touch pending and failed items), and a
            # reaper of this worker deletes its row first, so this lock on the row makes it wait for us.
            conn.execute(Q["lock_worker"], {"pk": worker_pk})
            for pk in sorted(groups):
                group = groups[pk]
                row = conn.execute(Q["record"], {"outcomes": _no_nul(blobs[pk]), "pk": pk,
                                                 "worker": worker_pk}).fetchone()
                if row is None:  # the batch is gone
                    res.refused += len(group)
                    continue
                refused = row["refused"]
                if refused:  # some leases were lost (the items were reclaimed): those outcomes do not count
                    lost = set(refused)
                    group = [o for o in group if o[1] not in lost]
                res.accepted += len(group)
                res.refused += len(refused)
                if group:
                    kinds = Counter(o[2] for o in group)
                    stats.setdefault(row["processor"], Stats()).add(
                        kinds, (o[6] - o[5] for o in group if o[2] != RETRY))
                    self._settle(conn, row)
            failpoints.hit("mid_commit")  # items and counters written, not committed: the fault tests crash here
            # Last, after every batch row: the stats rows are the most contended, held the shortest.
            for proc in sorted(stats):
                st = stats[proc]
                conn.execute(Q["add_stats"], {"processor": proc, "ok": st.ok, "fail": st.fail, "retry": st.retry,
                                              "dsum": st.duration_sum, "buckets": st.counts})
        return res

    def release(self, worker_pk: int, batch_pk: int, rowids: list[int]) -> None:
        if not rowids:
            return
        with self._tx() as conn:
            row = self._lock_batch(conn, batch_pk)
            if row is None:
                return
            to = ITEM_CODE[states.ItemStatus.CANCELLED] if row["status"] == BatchStatus.CANCELLING else 0
            row = conn.execute(Q["release_items"], {"pk": batch_pk, "seqs": list(rowids), "to": to,
                                                    "worker": worker_pk}).fetchone()
            if row is not None:
                self._settle(conn, row)
                if to == 0:
                    self._notify(conn, row["id"])  # handed back unstarted: another worker may take them


_SPEC_KEYS = ("params", "failure_policy", "webhook", "description", "tags", "source", "cost_per_item",
              "cost_unit")


_safe_url = safe_url  # the URL without its password, for messages


def _batch_info(r: _Row) -> BatchInfo:
    active = r["active_seconds"]
    if r["status"] == BatchStatus.RUNNING and r["running_since"] is not None:
        active += max(0.0, r["db_now"] - r["running_since"].timestamp())
    return batch_info(r, r["spec"], active, r["created_at"], r["started_at"], r["completed_at"], r["updated_at"])


def _item_info(batch_id: str, r: _Row) -> ItemInfo:
    # construct: these rows were validated on the way in, and exports read millions of them.
    started, finished = r["started_at"], r["finished_at"]
    errors = r["errors"]
    seq = r["seq"]
    return construct(
        ItemInfo, batch_id=batch_id, item_id=r["key"] if r["key"] is not None else str(seq), seq=seq,
        status=ITEM_FROM_CODE[r["status"]], attempts=r["attempts"], payload=r["payload"], result=r["result"],
        error=error_from(r["error"]) if r["error"] else None,
        errors=[e for e in map(error_from, errors) if e] if errors else [],
        started_at=started, finished_at=finished,
        duration_s=round((finished - started).total_seconds(), 6) if started and finished else None,
        cost=r["cost"], not_before=r["not_before"])


def _conninfo(url: str) -> str:
    params = conninfo_to_dict(url)
    # UTC sessions, so timestamps read back as UTC like the SQLite store's; set at connection start
    # (no extra round trip) and added to any options the URL already has (such as a search_path).
    params["options"] = " ".join(filter(None, [params.get("options"), "-c TimeZone=UTC"]))
    params.setdefault("application_name", "batchyard")
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
    return make_conninfo(**params)


@contextmanager
def _direct(conninfo: str, url: str) -> Iterator[psycopg.Connection[_Row]]:
    """A connection outside any pool, with connection errors turned into a ConfigError."""
    try:
        conn = psycopg.connect(conninfo, autocommit=True, row_factory=dict_row)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot connect to the PostgreSQL store {_safe_url(url)}: {str(exc).strip()}") from None
    with conn:
        yield conn


def _migrate(conn: psycopg.Connection[_Row], url: str, *, upgrade: bool) -> tuple[int, int]:
    """Check the stored schema version; apply migrations if ``upgrade`` or the schema is empty.

    Runs in one transaction under an advisory lock, so concurrent openers wait for the one migrating
    and then see its result; DDL is transactional, so a failed migration leaves nothing behind.
    """
    known = migrations("postgres")
    latest = known[-1][0]
    with conn.transaction():
        conn.execute(Q["migration_lock"])
        state = conn.execute(Q["schema_state"]).fetchone()
        assert state is not None
        current = 0
        if state["has_meta"]:
            row = conn.execute(Q["schema_version"]).fetchone()
            current = int(row["value"]) if row else 0
        where = _safe_url(url)
        if current > latest:
            raise SchemaVersionError(
                f"store {where} has schema version {current}, newer than this batchyard knows ({latest}); "
                f"upgrade batchyard")
        if current == latest:
            return current, current
        if not upgrade and (current or state["relations"]):
            found = f"schema version {current}" if current else "tables but no batchyard schema"
            raise SchemaVersionError(
                f"store {where} has {found}, older than this batchyard ({latest}); "
                f"run `batchyard db upgrade --store URL` to migrate it")
        for version, sql in known:
            if version > current:
                conn.execute(sql.encode())  # a whole file: several statements, no parameters
                conn.execute(Q["set_schema_version"], {"version": str(version)})
        return current, latest


def upgrade_postgres(url: str) -> tuple[int, int]:
    """Apply every pending migration: (version before, version after)."""
    with _direct(_conninfo(url), url) as conn:
        return _migrate(conn, url, upgrade=True)


def open_postgres(url: str) -> PostgresStore:
    return PostgresStore(url)
