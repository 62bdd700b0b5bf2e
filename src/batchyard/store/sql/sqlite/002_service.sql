-- The service's tables: the webhook outbox, API keys, per-processor statistics.

-- One row per event per batch webhook, written in the transaction that made the event happen.
-- status: pending (an attempt is due at next_attempt_at), delivered, failed (attempts exhausted).
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,   -- also the webhook-id header
    batch_pk        INTEGER NOT NULL,
    batch_id        TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    event           TEXT NOT NULL,
    url             TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        TEXT NOT NULL DEFAULT '[]',
    created_at      REAL NOT NULL,
    next_attempt_at REAL,
    delivered_at    REAL
);
CREATE INDEX webhook_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_batch ON webhook_deliveries (batch_id, created_at);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    name       TEXT,
    digest     TEXT NOT NULL UNIQUE,   -- SHA-256 of the key: keys are random, so no slow hash is needed
    created_at REAL NOT NULL,
    revoked_at REAL
);

-- Monotonic totals per processor, for /metrics: they outlive the batches that produced them.
CREATE TABLE processor_stats (
    processor    TEXT PRIMARY KEY,
    succeeded    INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    retried      INTEGER NOT NULL DEFAULT 0,
    duration_sum REAL NOT NULL DEFAULT 0,
    buckets      TEXT NOT NULL DEFAULT '[]'
);

CREATE INDEX batches_tenant ON batches (tenant, status);
