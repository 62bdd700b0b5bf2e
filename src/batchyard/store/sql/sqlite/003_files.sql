-- Files (uploads and produced outputs) and shared state (small JSON documents workers update atomically).

-- The bytes live in the row: one file to back up, deleted with a transaction, read in chunks through
-- SQLite's incremental blob I/O (a large file never sits in memory on the way out).
CREATE TABLE files (
    pk         INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    tenant     TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    filename   TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at REAL NOT NULL,
    meta       TEXT NOT NULL DEFAULT '{}',
    content    BLOB NOT NULL
);
CREATE INDEX files_tenant ON files (tenant, pk);

CREATE TABLE shared_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
