"""The SQLite store's shared resources per batch and workers' throttle notes (a mixin of ``SQLiteStore``; see
``core.resources`` and ``core.throttle``).

A batch's resource lives on its row (``resource_*`` columns): a status read stays one row, and deleting the
batch deletes it. Each method is one short write transaction; none is on the per-item hot path (usage comes in
once per group commit).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Any

from batchyard.core.errors import NotFound
from batchyard.core.store import ResourceClaim

_FINAL = "('completed', 'failed', 'cancelled')"


class SQLiteResources:
    """Store methods for per-batch resources; ``SQLiteStore`` provides the connections."""

    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def acquire_resource(self, batch_pk: int, worker_pk: int) -> ResourceClaim:
        with self._write() as conn:
            row = conn.execute("SELECT resource_status, resource_owner, resource_state FROM batches WHERE pk = ?",
                               (batch_pk,)).fetchone()
            if row is None:
                raise NotFound(f"no batch with pk {batch_pk}", kind="batch", ident=str(batch_pk))
            status, owner, state = row
            found = json.loads(state) if state else None
            if status == "ready":
                return ResourceClaim("ready", found)
            if status == "setup" and owner is not None and owner != worker_pk and \
                    conn.execute("SELECT 1 FROM workers WHERE pk = ?", (owner,)).fetchone() is not None:
                return ResourceClaim("wait")
            # Nobody has it, or its holder is gone (reaped or unregistered): the caller sets it up, from
            # whatever was checkpointed (or closed) before.
            conn.execute("UPDATE batches SET resource_status = 'setup', resource_owner = ? WHERE pk = ?",
                         (worker_pk, batch_pk))
            return ResourceClaim("setup", found)

    def save_resource(self, batch_pk: int, worker_pk: int, state: dict[str, Any], *, ready: bool,
                      capacity: float | None = None, cost: float = 0.0) -> bool:
        with self._write() as conn:
            return conn.execute(
                "UPDATE batches SET resource_state = ?, resource_status = ?, resource_owner = ?, "
                "resource_capacity = COALESCE(?, resource_capacity), cost_total = cost_total + ?, updated_at = ? "
                "WHERE pk = ? AND resource_status = 'setup' AND resource_owner = ?",
                (json.dumps(state), "ready" if ready else "setup", None if ready else worker_pk, capacity,
                 cost if ready else 0.0, time.time(), batch_pk, worker_pk)).rowcount == 1

    def release_resource(self, batch_pk: int, worker_pk: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE batches SET resource_owner = NULL "
                         "WHERE pk = ? AND resource_status = 'setup' AND resource_owner = ?", (batch_pk, worker_pk))

    def use_resource(self, usage: dict[int, float]) -> None:
        if not usage:
            return
        with self._write() as conn:
            conn.executemany("UPDATE batches SET resource_used = resource_used + ? WHERE pk = ?",
                             [(amount, pk) for pk, amount in sorted(usage.items())])

    def resources_to_close(self, processors: list[str]) -> list[tuple[int, str, str, dict[str, Any]]]:
        if not processors:
            return []
        marks = ",".join("?" * len(processors))
        rows = self._conn().execute(
            f"SELECT pk, id, processor, spec FROM batches WHERE resource_status = 'ready' AND status IN {_FINAL} "
            f"AND processor IN ({marks}) ORDER BY pk", processors).fetchall()
        return [(r[0], r[1], r[2], json.loads(r[3]).get("params") or {}) for r in rows]

    def close_resource(self, batch_pk: int) -> dict[str, Any] | None:
        with self._write() as conn:
            row = conn.execute("UPDATE batches SET resource_status = 'closed', resource_owner = NULL, updated_at = ? "
                               "WHERE pk = ? AND resource_status = 'ready' RETURNING resource_state",
                               (time.time(), batch_pk)).fetchone()
        return (json.loads(row[0]) if row[0] else {}) if row is not None else None

    def set_throttle(self, note: str | None, processors: list[str], only: set[str] | None = None) -> None:
        if not processors:
            return
        now = time.time()
        sql = "UPDATE batches SET throttle = ?, throttle_at = ?, " \
              "updated_at = CASE WHEN throttle IS ? THEN updated_at ELSE ? END " \
              f"WHERE processor IN ({','.join('?' * len(processors))})"
        # A note goes on the running batches; clearing takes it off wherever it is.
        sql += " AND status = 'running'" if note is not None else " AND throttle IS NOT NULL"
        args: list[Any] = [note, now if note is not None else None, note, now, *processors]
        if only is not None:
            sql += f" AND id IN ({','.join('?' * len(only))})"
            args.extend(sorted(only))
        with self._write() as conn:
            conn.execute(sql, args)
