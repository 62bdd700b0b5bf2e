-- Idempotency keys of submissions (HTTP Idempotency-Key): at most one batch per tenant and key. The row is
-- written in the transaction that creates the batch, and deleted with the batch.
CREATE TABLE idempotency_keys (
    tenant       TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    batch_pk     INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_batch ON idempotency_keys (batch_pk);
