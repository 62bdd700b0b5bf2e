"""The PostgreSQL store's shared resources per batch and workers' throttle notes (a mixin of ``PostgresStore``;
see ``core.resources`` and ``core.throttle``).

A batch's resource lives on its row (``resource_*`` columns). Each change locks the batch row first, the lock
order every writer keeps; none is on the per-item hot path (usage comes in once per group commit).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from batchyard.core.errors import NotFound
from batchyard.core.store import ResourceClaim

_Row = dict[str, Any]
_FINAL = "('completed', 'failed', 'cancelled')"


class PostgresResources:
    """Store methods for per-batch resources; ``PostgresStore`` provides the connections."""

    def _conn(self) -> AbstractContextManager[psycopg.Connection[_Row]]:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[psycopg.Connection[_Row]]:
        raise NotImplementedError

    def acquire_resource(self, batch_pk: int, worker_pk: int) -> ResourceClaim:
        with self._tx() as conn:
            row = conn.execute("SELECT resource_status, resource_owner, resource_state, "
                               "EXISTS (SELECT 1 FROM workers w WHERE w.pk = b.resource_owner) AS owner_alive "
                               "FROM batches b WHERE pk = %(pk)s FOR UPDATE", {"pk": batch_pk}).fetchone()
            if row is None:
                raise NotFound(f"no batch with pk {batch_pk}", kind="batch", ident=str(batch_pk))
            if row["resource_status"] == "ready":
                return ResourceClaim("ready", row["resource_state"])
            if row["resource_status"] == "setup" and row["resource_owner"] not in (None, worker_pk) \
                    and row["owner_alive"]:
                return ResourceClaim("wait")
            # Nobody has it, or its holder is gone (reaped or unregistered): the caller sets it up, from
            # whatever was checkpointed (or closed) before.
            conn.execute("UPDATE batches SET resource_status = 'setup', resource_owner = %(worker)s WHERE pk = %(pk)s",
                         {"pk": batch_pk, "worker": worker_pk})
            return ResourceClaim("setup", row["resource_state"])

    def save_resource(self, batch_pk: int, worker_pk: int, state: dict[str, Any], *, ready: bool,
                      capacity: float | None = None, cost: float = 0.0) -> bool:
        with self._tx() as conn:
            return conn.execute(
                "UPDATE batches SET resource_state = %(state)s, resource_status = %(status)s, "
                "resource_owner = %(owner)s, resource_capacity = COALESCE(%(capacity)s, resource_capacity), "
                "cost_total = cost_total + %(cost)s, updated_at = clock_timestamp() "
                "WHERE pk = %(pk)s AND resource_status = 'setup' AND resource_owner = %(worker)s",
                {"state": Jsonb(state), "status": "ready" if ready else "setup", "owner": None if ready else worker_pk,
                 "capacity": capacity, "cost": cost if ready else 0.0, "pk": batch_pk,
                 "worker": worker_pk}).rowcount == 1

    def release_resource(self, batch_pk: int, worker_pk: int) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE batches SET resource_owner = NULL "
                         "WHERE pk = %(pk)s AND resource_status = 'setup' AND resource_owner = %(worker)s",
                         {"pk": batch_pk, "worker": worker_pk})

    def use_resource(self, usage: dict[int, float]) -> None:
        if not usage:
            return
        pks = sorted(usage)
        with self._tx() as conn:
            conn.execute("UPDATE batches b SET resource_used = resource_used + u.amount "
                         "FROM unnest(%(pks)s::bigint[], %(amounts)s::float8[]) AS u(pk, amount) WHERE b.pk = u.pk",
                         {"pks": pks, "amounts": [usage[pk] for pk in pks]})

    def resources_to_close(self, processors: list[str]) -> list[tuple[int, str, str, dict[str, Any]]]:
        if not processors:
            return []
        with self._conn() as conn:
            rows = conn.execute(f"SELECT pk, id, processor, spec FROM batches WHERE resource_status = 'ready' "
                                f"AND status IN {_FINAL} AND processor = ANY(%(procs)s) ORDER BY pk",
                                {"procs": processors}).fetchall()
        return [(r["pk"], r["id"], r["processor"], r["spec"].get("params") or {}) for r in rows]

    def close_resource(self, batch_pk: int) -> dict[str, Any] | None:
        with self._tx() as conn:
            row = conn.execute("UPDATE batches SET resource_status = 'closed', resource_owner = NULL, "
                               "updated_at = clock_timestamp() WHERE pk = %(pk)s AND resource_status = 'ready' "
                               "RETURNING resource_state", {"pk": batch_pk}).fetchone()
        return (row["resource_state"] or {}) if row is not None else None

    def set_throttle(self, note: str | None, processors: list[str], only: set[str] | None = None) -> None:
        if not processors:
            return
        # A note goes on the running batches; clearing takes it off wherever it is. Times by the database clock.
        with self._tx() as conn:
            conn.execute(
                "UPDATE batches SET throttle = %(note)s::text, "
                "throttle_at = CASE WHEN %(note)s::text IS NULL THEN NULL "
                "ELSE extract(epoch FROM clock_timestamp())::float8 END, "
                "updated_at = CASE WHEN throttle IS DISTINCT FROM %(note)s::text THEN clock_timestamp() "
                "ELSE updated_at END "
                "WHERE processor = ANY(%(procs)s) AND (%(only)s::text[] IS NULL OR id = ANY(%(only)s::text[])) "
                "AND CASE WHEN %(note)s::text IS NULL THEN throttle IS NOT NULL ELSE status = 'running' END",
                {"note": note, "procs": processors, "only": sorted(only) if only is not None else None})
