CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE batches (
    pk              INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    tenant          TEXT NOT NULL,
    processor       TEXT NOT NULL,
    status          TEXT NOT NULL,
    pause_reason    TEXT,
    status_reason   TEXT,
    priority        INTEGER NOT NULL,
    parallel        INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    spec            TEXT NOT NULL,
    fingerprint     TEXT,
    first_item      INTEGER NOT NULL DEFAULT 0,
    last_item       INTEGER NOT NULL DEFAULT -1,
    items_total     INTEGER NOT NULL DEFAULT 0,
    items_pending   INTEGER NOT NULL DEFAULT 0,
    items_running   INTEGER NOT NULL DEFAULT 0,
    items_succeeded INTEGER NOT NULL DEFAULT 0,
    items_failed    INTEGER NOT NULL DEFAULT 0,
    items_cancelled INTEGER NOT NULL DEFAULT 0,
    attempts_total  INTEGER NOT NULL DEFAULT 0,
    cost_total      REAL NOT NULL DEFAULT 0,
    failing         INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    started_at      REAL,
    completed_at    REAL,
    updated_at      REAL NOT NULL,
    active_seconds  REAL NOT NULL DEFAULT 0,
    running_since   REAL,
    last_claim_at   REAL NOT NULL DEFAULT 0
);
CREATE INDEX batches_status ON batches (status);
CREATE INDEX batches_fingerprint ON batches (fingerprint);

-- A batch's items are inserted in one transaction, so their ids form the range
-- [batches.first_item, batches.last_item] and item seq = id - first_item + 1.
-- status: 0 pending, 1 running, 2 succeeded, 3 failed, 4 cancelled.
CREATE TABLE items (
    id          INTEGER PRIMARY KEY,
    key         TEXT,
    payload     TEXT NOT NULL,
    status      INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    worker      INTEGER,          -- the lease holder; only it may record an outcome
    claim       INTEGER,          -- marks the rows of one claim so they can be read back in one statement
    not_before  REAL,
    started_at  REAL,
    finished_at REAL,
    result      TEXT,
    error       TEXT,
    errors      TEXT,
    cost        REAL
);
-- Only pending items are indexed for claims: finishing an item never touches this index.
CREATE INDEX items_pending ON items (id) WHERE status = 0;
CREATE INDEX items_key ON items (key) WHERE key IS NOT NULL;

-- AUTOINCREMENT: a worker's pk is its fencing token, so it must never be handed to another worker.
CREATE TABLE workers (
    pk           INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    pid_started  REAL,
    processors   TEXT NOT NULL,
    concurrency  INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    running      TEXT NOT NULL DEFAULT '{}'
);

-- Concurrency slots a worker holds per batch; every worker counts the others' slots.
CREATE TABLE slots (
    worker_pk INTEGER NOT NULL,
    batch_pk  INTEGER NOT NULL,
    slots     INTEGER NOT NULL,
    PRIMARY KEY (worker_pk, batch_pk)
);

CREATE TABLE rate_buckets (
    processor  TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at REAL NOT NULL
);
