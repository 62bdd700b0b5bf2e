"""The SQLite store's files and shared state (a mixin of ``SQLiteStore``: one noun per module)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import IO, Any

from batchyard.core.errors import NotFound
from batchyard.core.models import FileInfo, ts
from batchyard.store.common import content_size, new_file_id

_COLS = "id, tenant, purpose, filename, bytes, created_at, meta"
_COPY_CHUNK = 1 << 20


class SQLiteFiles:
    """Store methods for files and shared state; ``SQLiteStore`` provides the connections."""

    path: Any

    def _conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    # -- files -------------------------------------------------------------------------------

    def add_file(self, tenant: str, purpose: str, filename: str, content: bytes | IO[bytes], *,
                 file_id: str | None = None, meta: dict[str, Any] | None = None) -> FileInfo:
        size, fh = content_size(content)
        file_id = file_id or new_file_id()
        with self._write() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM files WHERE id = ?", (file_id,)).fetchone()
            if row is not None:
                return _file_info(row)
            # zeroblob reserves the space; the bytes are then copied in chunks, inside the same transaction.
            cur = conn.execute("INSERT INTO files (id, tenant, purpose, filename, bytes, created_at, meta, content)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?, zeroblob(?))",
                               (file_id, tenant, purpose, filename, size, time.time(), json.dumps(meta or {}), size))
            if size:
                with conn.blobopen("files", "content", cur.lastrowid) as blob:  # type: ignore[arg-type]
                    left = size
                    while left > 0:
                        chunk = fh.read(min(_COPY_CHUNK, left))
                        if not chunk:
                            raise ValueError(f"file {filename!r}: ended {left} bytes before its announced size")
                        blob.write(chunk)
                        left -= len(chunk)
            row = conn.execute(f"SELECT {_COLS} FROM files WHERE id = ?", (file_id,)).fetchone()
        return _file_info(row)

    def get_file(self, file_id: str) -> FileInfo:
        row = self._conn().execute(f"SELECT {_COLS} FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            raise NotFound(f"no file {file_id!r}", kind="file", ident=file_id)
        return _file_info(row)

    def file_content(self, file_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        row = self._conn().execute("SELECT pk FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            raise NotFound(f"no file {file_id!r}", kind="file", ident=file_id)
        return self._chunks(row[0], chunk_size)

    def _chunks(self, pk: int, chunk_size: int) -> Iterator[bytes]:
        # A connection of its own: the consumer (a streamed HTTP response) may pull each chunk on another
        # thread, and the thread-local connections must never be used by two threads.
        conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            with conn.blobopen("files", "content", pk, readonly=True) as blob:
                while chunk := blob.read(chunk_size):
                    yield chunk
        finally:
            conn.close()

    def list_files(self, *, tenant: str | None = None, purpose: str | None = None, limit: int = 100,
                   after: str | None = None) -> list[FileInfo]:
        sql, args = f"SELECT {_COLS} FROM files WHERE 1=1", []
        if tenant is not None:
            sql += " AND tenant = ?"
            args.append(tenant)
        if purpose is not None:
            sql += " AND purpose = ?"
            args.append(purpose)
        if after is not None:
            sql += " AND pk < COALESCE((SELECT pk FROM files WHERE id = ?), 0)"
            args.append(after)
        sql += " ORDER BY pk DESC LIMIT ?"
        args.append(limit)
        return [_file_info(r) for r in self._conn().execute(sql, args)]

    def delete_file(self, file_id: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount == 0:
                raise NotFound(f"no file {file_id!r}", kind="file", ident=file_id)

    # -- shared state ------------------------------------------------------------------------

    def update_shared_state(self, key: str, update: Callable[[dict[str, Any] | None, float], dict[str, Any]]
                            ) -> dict[str, Any]:
        with self._write() as conn:  # BEGIN IMMEDIATE: updaters in every process take turns here
            row = conn.execute("SELECT value FROM shared_state WHERE key = ?", (key,)).fetchone()
            now = time.time()
            new = update(json.loads(row[0]) if row else None, now)
            conn.execute("INSERT INTO shared_state (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) "
                         "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                         (key, json.dumps(new), now))
        return new

    def get_shared_state(self, key: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT value FROM shared_state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None


def _file_info(r: Any) -> FileInfo:
    return FileInfo(file_id=r[0], tenant=r[1], purpose=r[2], filename=r[3], bytes=r[4], created_at=ts(r[5]),
                    meta=json.loads(r[6]))
