-- Cost as a control, shared resources per batch, and workers' throttle notes: all on the batch row, so a
-- status read stays one row.

-- The most a batch may spend (NULL: no budget) and its estimated total (NULL: the fixed cost per item
-- times the items, or unknown).
ALTER TABLE batches ADD COLUMN budget double precision;
ALTER TABLE batches ADD COLUMN cost_estimated double precision;

-- A resource the processor sets up once per batch (a postage stamp, a session): NULL before any setup,
-- 'setup' while the worker resource_owner sets it up (resource_state may hold its checkpoint), 'ready' once
-- set up (resource_state is what every item gets), 'closed' once torn down.
ALTER TABLE batches ADD COLUMN resource_status text CHECK (resource_status IN ('setup', 'ready', 'closed'));
ALTER TABLE batches ADD COLUMN resource_owner bigint;
ALTER TABLE batches ADD COLUMN resource_state jsonb;
ALTER TABLE batches ADD COLUMN resource_capacity double precision;
ALTER TABLE batches ADD COLUMN resource_used double precision NOT NULL DEFAULT 0;

-- Why the workers serving the batch stopped claiming (memory, disk, CPU), refreshed while it lasts
-- (throttle_at: seconds since the epoch, by the database clock).
ALTER TABLE batches ADD COLUMN throttle text;
ALTER TABLE batches ADD COLUMN throttle_at double precision;
