"""The PostgreSQL store's files and shared state (a mixin of ``PostgresStore``: one noun per module)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import IO, Any

import psycopg
from psycopg.types.json import Jsonb

from batchyard.core.errors import NotFound
from batchyard.core.models import FileInfo
from batchyard.store.common import content_size, new_file_id

_Row = dict[str, Any]
_COLS = "id, tenant, purpose, filename, bytes, created_at, meta"


class PostgresFiles:
    """Store methods for files and shared state; ``PostgresStore`` provides the connections."""

    def _conn(self) -> AbstractContextManager[psycopg.Connection[_Row]]:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[psycopg.Connection[_Row]]:
        raise NotImplementedError

    # -- files -------------------------------------------------------------------------------

    def add_file(self, tenant: str, purpose: str, filename: str, content: bytes | IO[bytes], *,
                 file_id: str | None = None, meta: dict[str, Any] | None = None) -> FileInfo:
        size, fh = content_size(content)
        data = fh.read(size)  # one bytea parameter: PostgreSQL takes a value whole
        file_id = file_id or new_file_id()
        with self._tx() as conn:
            row = conn.execute(
                f"INSERT INTO files (id, tenant, purpose, filename, bytes, meta, content) "
                f"VALUES (%(id)s, %(tenant)s, %(purpose)s, %(filename)s, %(bytes)s, %(meta)s, %(content)s) "
                f"ON CONFLICT (id) DO NOTHING RETURNING {_COLS}",
                {"id": file_id, "tenant": tenant, "purpose": purpose, "filename": filename, "bytes": len(data),
                 "meta": Jsonb(meta or {}), "content": data}).fetchone()
            if row is None:  # the id was taken: the file that has it
                row = conn.execute(f"SELECT {_COLS} FROM files WHERE id = %(id)s", {"id": file_id}).fetchone()
        assert row is not None
        return _file_info(row)

    def get_file(self, file_id: str) -> FileInfo:
        with self._conn() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM files WHERE id = %(id)s", {"id": file_id}).fetchone()
        if row is None:
            raise NotFound(f"no file {file_id!r}", kind="file", ident=file_id)
        return _file_info(row)

    def file_content(self, file_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with self._conn() as conn:
            row = conn.execute("SELECT pk, bytes FROM files WHERE id = %(id)s", {"id": file_id}).fetchone()
        if row is None:
            raise NotFound(f"no file {file_id!r}", kind="file", ident=file_id)
        return self._chunks(row["pk"], row["bytes"], chunk_size)

    def _chunks(self, pk: int, size: int, chunk_size: int) -> Iterator[bytes]:
        # One pooled connection per chunk, not one held for the whole (possibly slow) download.
        for start in range(0, size, chunk_size):
            with self._conn() as conn:
                row = conn.execute("SELECT substring(content FROM %(from)s FOR %(n)s) AS part FROM files "
                                   "WHERE pk = %(pk)s", {"from": start + 1, "n": chunk_size, "pk": pk}).fetchone()
            if row is None:
                raise NotFound(f"file deleted while it was read (pk {pk})", kind="file", ident=str(pk))
            yield bytes(row["part"])

    def list_files(self, *, tenant: str | None = None, purpose: str | None = None, limit: int = 100,
                   after: str | None = None) -> list[FileInfo]:
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_COLS} FROM files WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s) "
                f"AND (%(purpose)s::text IS NULL OR purpose = %(purpose)s) "
                f"AND (%(after)s::text IS NULL OR pk < COALESCE((SELECT pk FROM files WHERE id = %(after)s), 0)) "
                f"ORDER BY pk DESC LIMIT %(limit)s",
                {"tenant": tenant, "purpose": purpose, "after": after, "limit": limit}).fetchall()
        return [_file_info(r) for r in rows]

    def delete_file(self, file_id: str) -> None:
        with self._conn() as conn:
            if conn.execute("DELETE FROM files WHERE id = %(id)s", {"id": file_id}).rowcount == 0:
                raise NotFound(f"no file {file_id!r}", kind="file", ident=file_id)

    # -- shared state ------------------------------------------------------------------------

    def update_shared_state(self, key: str, update: Callable[[dict[str, Any] | None, float], dict[str, Any]]
                            ) -> dict[str, Any]:
        with self._tx() as conn:
            conn.execute("INSERT INTO shared_state (key, value) VALUES (%(key)s, NULL) ON CONFLICT (key) DO NOTHING",
                         {"key": key})
            # The row lock serialises updaters on every machine; the database clock is the one they share.
            row = conn.execute("SELECT value, extract(epoch FROM clock_timestamp())::float8 AS now FROM shared_state "
                               "WHERE key = %(key)s FOR UPDATE", {"key": key}).fetchone()
            assert row is not None
            new = update(row["value"], row["now"])
            conn.execute("UPDATE shared_state SET value = %(value)s, updated_at = clock_timestamp() "
                         "WHERE key = %(key)s", {"key": key, "value": Jsonb(new)})
        return new

    def get_shared_state(self, key: str) -> dict[str, Any] | None:
        with self._conn() as conn:
            row = conn.execute("SELECT value FROM shared_state WHERE key = %(key)s", {"key": key}).fetchone()
        value = row["value"] if row else None
        return value if isinstance(value, dict) else None


def _file_info(r: _Row) -> FileInfo:
    meta = r["meta"]
    return FileInfo(file_id=r["id"], tenant=r["tenant"], purpose=r["purpose"], filename=r["filename"],
                    bytes=r["bytes"], created_at=r["created_at"],
                    meta=meta if isinstance(meta, dict) else json.loads(meta or "{}"))
