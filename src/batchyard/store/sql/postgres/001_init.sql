-- The PostgreSQL store's first schema. Applied in one transaction under an advisory lock
-- (PostgreSQL has transactional DDL: a failed migration leaves nothing behind).
--
-- Times the database decides (created, heartbeats, leases, claims) are timestamptz from the
-- database clock, so machines with skewed clocks agree; times a worker measures (an item's start
-- and finish) are its own.

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE batches (
    pk              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              text NOT NULL UNIQUE,
    tenant          text NOT NULL,
    processor       text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'running', 'paused', 'cancelling', 'completed',
                                                    'failed', 'cancelled')),
    pause_reason    text,
    status_reason   text,
    priority        smallint NOT NULL,
    parallel        integer NOT NULL,
    max_attempts    integer NOT NULL,
    spec            jsonb NOT NULL,
    fingerprint     text,
    items_total     bigint NOT NULL DEFAULT 0,
    items_pending   bigint NOT NULL DEFAULT 0,
    items_running   bigint NOT NULL DEFAULT 0,
    items_succeeded bigint NOT NULL DEFAULT 0,
    items_failed    bigint NOT NULL DEFAULT 0,
    items_cancelled bigint NOT NULL DEFAULT 0,
    attempts_total  bigint NOT NULL DEFAULT 0,
    cost_total      double precision NOT NULL DEFAULT 0,
    failing         boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    active_seconds  double precision NOT NULL DEFAULT 0,
    running_since   timestamptz,
    last_claim_at   timestamptz NOT NULL DEFAULT 'epoch'
);
-- Claims scan the running batches; the scan stays small however many finished batches are kept.
CREATE INDEX batches_running ON batches (pk) WHERE status = 'running';
CREATE INDEX batches_fingerprint ON batches (fingerprint) WHERE fingerprint IS NOT NULL;
CREATE INDEX batches_tenant ON batches (tenant, status);

-- Items are keyed by (batch, seq): a batch's items are one contiguous range of the primary key,
-- so reading, exporting and deleting a batch are index range scans, and seq needs no arithmetic.
-- No foreign key to batches: a per-row check would double the cost of inserting a million items;
-- batches and their items are deleted together in one transaction instead.
-- status: 0 pending, 1 running, 2 succeeded, 3 failed, 4 cancelled.
-- payload, result and error are json (the text as written: key order survives for CSV columns);
-- errors is jsonb because outcomes append to it.
CREATE TABLE items (
    batch_pk    bigint NOT NULL,
    seq         integer NOT NULL,
    key         text,
    status      smallint NOT NULL DEFAULT 0,
    attempts    integer NOT NULL DEFAULT 0,
    worker      bigint,           -- the lease holder (its pk is the fencing token): only it may record
    not_before  timestamptz,
    started_at  timestamptz,
    finished_at timestamptz,
    cost        double precision,
    payload     json NOT NULL,
    result      json,
    error       json,
    errors      jsonb,
    PRIMARY KEY (batch_pk, seq)
);
-- Claims read only this: pending items of one batch in seq order. Finishing an item leaves it.
-- No index finds a worker's leased items: it would cost every claim an index insert (claims and
-- group commits measured 15-25% slower with one), and only reaping and unregistering need it, which
-- scan the batches that have items running instead.
CREATE INDEX items_pending ON items (batch_pk, seq) WHERE status = 0;
CREATE INDEX items_key ON items (batch_pk, key) WHERE key IS NOT NULL;

-- An identity never hands out a value twice: a worker's pk is its fencing token.
CREATE TABLE workers (
    pk           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    name         text NOT NULL,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    pid_started  double precision,   -- the process's start on its own host's clock: only compared there
    processors   jsonb NOT NULL,
    concurrency  integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    running      jsonb NOT NULL DEFAULT '{}'
);

-- Concurrency slots a worker holds per batch; every worker counts the others' slots.
CREATE TABLE slots (
    worker_pk bigint NOT NULL,
    batch_pk  bigint NOT NULL,
    slots     integer NOT NULL,
    PRIMARY KEY (worker_pk, batch_pk)
);
CREATE INDEX slots_batch ON slots (batch_pk);

-- Token buckets per processor; updated_at is the database clock in epoch seconds (limits.py's unit).
CREATE TABLE rate_buckets (
    processor  text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at double precision NOT NULL
);

-- The service's tables: the webhook outbox, API keys, per-processor statistics. --------------

-- One row per event per batch webhook, written in the transaction that made the event happen.
-- status: pending (an attempt is due at next_attempt_at), delivered, failed (attempts exhausted).
-- payload is the batch snapshot as sent (text: the bytes are signed, so they must come back unchanged).
CREATE TABLE webhook_deliveries (
    id              text PRIMARY KEY,   -- also the webhook-id header
    batch_pk        bigint NOT NULL,
    batch_id        text NOT NULL,
    tenant          text NOT NULL,
    event           text NOT NULL,
    url             text NOT NULL,
    payload         text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        jsonb NOT NULL DEFAULT '[]',
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_attempt_at timestamptz,
    delivered_at    timestamptz
);
CREATE INDEX webhook_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_batch ON webhook_deliveries (batch_id, created_at);
CREATE INDEX webhook_progress ON webhook_deliveries (batch_pk, created_at) WHERE event = 'batch.progress';

CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    name       text,
    digest     text NOT NULL UNIQUE,   -- SHA-256 of the key: keys are random, so no slow hash is needed
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at timestamptz
);

-- Monotonic totals per processor, for /metrics: they outlive the batches that produced them.
-- buckets is an array so that concurrent group commits add to it in place, without a lost update.
CREATE TABLE processor_stats (
    processor    text PRIMARY KEY,
    succeeded    bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    retried      bigint NOT NULL DEFAULT 0,
    duration_sum double precision NOT NULL DEFAULT 0,
    buckets      bigint[] NOT NULL DEFAULT '{}'
);
