-- Idempotency keys of submissions (HTTP Idempotency-Key): at most one batch per tenant and key. The row is
-- written in the transaction that creates the batch (a racing second insert waits for it, then conflicts),
-- and deleted with the batch.
CREATE TABLE idempotency_keys (
    tenant       text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    batch_pk     bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_keys_batch ON idempotency_keys (batch_pk);
