-- Named queries of the PostgreSQL store, with psycopg's named parameters. No comment may hold a
-- percent sign: a comment between two blocks ends the first, and psycopg reads all of a query's
-- text for placeholders.
-- Every status change is a compare-and-set: its WHERE names the status it moves from.

-- name: schema_state
SELECT to_regclass('meta') IS NOT NULL AS has_meta,
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S')) AS relations;

-- name: schema_version
SELECT value::int FROM meta WHERE key = 'schema_version';

-- name: set_schema_version
INSERT INTO meta (key, value) VALUES ('schema_version', %(version)s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- Advisory locks are per database; keying them by schema lets several batchyard schemas share one.

-- name: migration_lock
SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.batchyard.migrate'));

-- Claims serialise here: slots and rate buckets are read, planned over and written back, and two
-- planners reading the same slots would both grant the same free room. Item picks use SKIP LOCKED.
-- A new batch has no statistics yet, and the planner then takes its items for a handful and picks
-- a bitmap scan plus a sort of every pending item (100k items: 90 ms, spilling to disk) over the
-- ordered index scan that stops after a chunk (30 ms): bitmap scans are off for the claim's
-- transaction (set_config(..., true) is SET LOCAL).
-- name: claim_lock
SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.batchyard.claim')),
       set_config('enable_bitmapscan', 'off', true);

-- name: notify_work
SELECT pg_notify('batchyard_work', %(batch_id)s);

-- batches ------------------------------------------------------------------------------------

-- name: insert_batch
INSERT INTO batches (id, tenant, processor, status, priority, parallel, max_attempts, spec, fingerprint,
                     started_at, running_since)
VALUES (%(id)s, %(tenant)s, %(processor)s, %(status)s, %(priority)s, %(parallel)s, %(max_attempts)s,
        %(spec)s, %(fingerprint)s,
        CASE WHEN %(start)s THEN now() END, CASE WHEN %(start)s THEN now() END)
RETURNING pk;

-- A chunk of items arrives as one JSON array of [key, payload] pairs: one statement per chunk,
-- and no per-item work in Python.
-- name: insert_items
INSERT INTO items (batch_pk, seq, key, payload)
SELECT %(pk)s, %(first)s + e.n - 1, e.v ->> 0, e.v -> 1
FROM json_array_elements(%(items)s::json) WITH ORDINALITY AS e(v, n);

-- name: finish_insert
UPDATE batches SET items_total = %(n)s, items_pending = %(n)s, budget = %(budget)s, cost_estimated = %(estimated)s
WHERE pk = %(pk)s;

-- name: set_budget
UPDATE batches SET budget = %(budget)s, updated_at = clock_timestamp() WHERE pk = %(pk)s RETURNING *;

-- Reads of a batch carry the database clock (db_now) so that active seconds are judged by it.
-- name: get_batch
SELECT *, extract(epoch FROM clock_timestamp())::float8 AS db_now FROM batches WHERE id = %(id)s;

-- name: get_batch_for_update
SELECT * FROM batches WHERE id = %(id)s FOR UPDATE;

-- name: batch_by_pk_for_update
SELECT * FROM batches WHERE pk = %(pk)s FOR UPDATE;

-- name: lock_batches
SELECT pk, status, failing, max_attempts FROM batches WHERE pk = ANY(%(pks)s) ORDER BY pk FOR UPDATE;

-- name: find_resumable
SELECT *, extract(epoch FROM clock_timestamp())::float8 AS db_now FROM batches
WHERE fingerprint = %(fingerprint)s AND status <> 'cancelled' ORDER BY pk DESC LIMIT 1;

-- Every filter is optional (NULL: not applied). The caller appends the order: newest first (paged by
-- the last id seen), or oldest change first when following changes (updated_after).
-- name: list_batches
SELECT *, extract(epoch FROM clock_timestamp())::float8 AS db_now FROM batches
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(processor)s::text IS NULL OR processor = %(processor)s)
  AND (%(tag)s::text IS NULL OR spec -> 'tags' ? %(tag)s)
  AND (%(after)s::float8 IS NULL OR created_at >= to_timestamp(%(after)s))
  AND (%(before_time)s::float8 IS NULL OR created_at < to_timestamp(%(before_time)s))
  AND (%(updated_after)s::float8 IS NULL OR updated_at >= to_timestamp(%(updated_after)s))
  AND (%(before)s::text IS NULL OR pk < COALESCE((SELECT b.pk FROM batches b WHERE b.id = %(before)s), 0))

-- name: mark_failing
UPDATE batches SET failing = true, status_reason = %(why)s WHERE pk = %(pk)s AND NOT failing RETURNING *;

-- name: cancel_pending
WITH c AS (
    UPDATE items SET status = 4 WHERE batch_pk = %(pk)s AND status = 0 RETURNING 1
)
UPDATE batches SET items_pending = items_pending - (SELECT count(*) FROM c),
                   items_cancelled = items_cancelled + (SELECT count(*) FROM c),
                   status_reason = COALESCE(%(reason)s, status_reason), updated_at = clock_timestamp()
WHERE pk = %(pk)s
RETURNING *;

-- name: retry_failed
WITH r AS (
    UPDATE items SET status = 0, attempts = 0, not_before = NULL WHERE batch_pk = %(pk)s AND status = 3 RETURNING 1
)
UPDATE batches SET items_failed = items_failed - (SELECT count(*) FROM r),
                   items_pending = items_pending + (SELECT count(*) FROM r),
                   failing = false, status_reason = NULL, completed_at = NULL
WHERE pk = %(pk)s
RETURNING *;

-- The compare-and-set behind every batch status change: zero rows means the status moved under us.
-- Times are the database clock; running time accrues while the batch leaves running.
-- name: set_batch_status
UPDATE batches SET
    status = %(to)s,
    updated_at = clock_timestamp(),
    pause_reason = CASE WHEN %(to)s = 'paused' THEN %(pause_reason)s END,
    active_seconds = active_seconds + CASE
        WHEN status = 'running' AND %(to)s <> 'running' AND running_since IS NOT NULL
        THEN greatest(0, extract(epoch FROM now() - running_since)::float8) ELSE 0 END,
    running_since = CASE WHEN %(to)s = 'running' THEN COALESCE(
        CASE WHEN status = 'running' THEN running_since END, now()) END,
    started_at = CASE WHEN %(to)s = 'running' THEN COALESCE(started_at, now()) ELSE started_at END,
    completed_at = CASE WHEN %(to)s IN ('completed', 'failed', 'cancelled') THEN now() ELSE completed_at END
WHERE pk = %(pk)s AND status = %(from)s
RETURNING *;

-- Deliveries still due go out (they carry their own snapshot); finished ones go with the batch.
-- name: delete_batches
WITH i AS (DELETE FROM items WHERE batch_pk = ANY(%(pks)s)),
     s AS (DELETE FROM slots WHERE batch_pk = ANY(%(pks)s)),
     d AS (DELETE FROM webhook_deliveries WHERE batch_pk = ANY(%(pks)s) AND status <> 'pending'),
     k AS (DELETE FROM idempotency_keys WHERE batch_pk = ANY(%(pks)s))
DELETE FROM batches WHERE pk = ANY(%(pks)s);

-- name: old_final_batches
SELECT pk, id FROM batches
WHERE status IN ('completed', 'failed', 'cancelled') AND COALESCE(completed_at, updated_at) < to_timestamp(%(before)s)
ORDER BY pk
FOR UPDATE;

-- name: batch_states
SELECT pk, status FROM batches WHERE pk = ANY(%(pks)s);

-- items --------------------------------------------------------------------------------------

-- name: item_by_key
SELECT * FROM items WHERE batch_pk = %(pk)s AND key = %(key)s LIMIT 1;

-- name: item_by_seq
SELECT * FROM items WHERE batch_pk = %(pk)s AND seq = %(seq)s AND key IS NULL;

-- name: items_page
SELECT * FROM items WHERE batch_pk = %(pk)s AND seq > %(after)s ORDER BY seq LIMIT %(limit)s;

-- name: items_page_status
SELECT * FROM items WHERE batch_pk = %(pk)s AND seq > %(after)s AND status = %(status)s
ORDER BY seq LIMIT %(limit)s;

-- Succeeded (2) and failed (3) items per bucket of finished_at, for the dashboard's throughput chart.
-- name: timeline
SELECT floor(extract(epoch FROM finished_at) / %(bucket)s)::bigint AS n,
       count(*) FILTER (WHERE status = 2) AS ok, count(*) FILTER (WHERE status = 3) AS failed
FROM items
WHERE batch_pk = %(pk)s AND status IN (2, 3) AND finished_at IS NOT NULL
GROUP BY n;

-- Numeric fields of succeeded items' results, nested ones by dotted name; array elements and
-- booleans are not fields. One pass in the database instead of in Python.
-- name: result_stats
WITH RECURSIVE f(path, value) AS (
    SELECT e.key, e.value
    FROM items i, jsonb_each(i.result::jsonb) AS e
    WHERE i.batch_pk = %(pk)s AND i.status = 2 AND json_typeof(i.result) = 'object'
  UNION ALL
    SELECT f.path || '.' || e.key, e.value
    FROM f, jsonb_each(f.value) AS e
    WHERE jsonb_typeof(f.value) = 'object'
)
SELECT path, count(*) AS n, sum(value::numeric) AS total, min(value::numeric) AS lo, max(value::numeric) AS hi,
       bool_and(value::text ~ '^-?[0-9]+$') AS integral
FROM f
WHERE jsonb_typeof(value) = 'number'
GROUP BY path
ORDER BY count(*) DESC, path
LIMIT %(limit)s;

-- workers ------------------------------------------------------------------------------------

-- name: register_worker
INSERT INTO workers (id, name, hostname, pid, pid_started, processors, concurrency)
VALUES (%(id)s, %(name)s, %(hostname)s, %(pid)s, %(pid_started)s, %(processors)s, %(concurrency)s)
RETURNING pk;

-- name: heartbeat
UPDATE workers SET heartbeat_at = clock_timestamp(), running = %(running)s WHERE pk = %(pk)s;

-- name: worker_exists
SELECT 1 FROM workers WHERE pk = %(pk)s;

-- A group commit's fence against its own reaper, who must delete the row before taking the items back.
-- name: lock_worker
SELECT 1 FROM workers WHERE pk = %(pk)s FOR KEY SHARE;

-- name: all_workers
SELECT * FROM workers ORDER BY pk;

-- A lease has expired when the heartbeat is older than the lease by the database clock.
-- name: reap_candidates
SELECT pk, hostname, pid, pid_started,
       heartbeat_at < clock_timestamp() - make_interval(secs => %(lease)s) AS silent
FROM workers;

-- name: delete_workers
DELETE FROM workers WHERE pk = ANY(%(pks)s) RETURNING pk;

-- name: delete_worker_slots
DELETE FROM slots WHERE worker_pk = ANY(%(pks)s);

-- name: delete_slots
DELETE FROM slots WHERE worker_pk = %(worker)s AND batch_pk = %(pk)s;

-- name: batches_with_running
SELECT pk FROM batches WHERE items_running > 0 ORDER BY pk;

-- Items leased to these workers go back to pending; in a cancelling batch they are cancelled; an
-- item whose workers were lost too often (reaping only) fails instead of looping for ever.
-- name: release_leased
WITH r AS (
    UPDATE items SET
        status = CASE WHEN %(cancel)s THEN 4 WHEN %(lost)s AND attempts >= %(limit)s THEN 3 ELSE 0 END,
        worker = NULL,
        error = CASE WHEN NOT %(cancel)s AND %(lost)s AND attempts >= %(limit)s
                     THEN json_build_object('type', 'WorkerLost', 'attempt', attempts,
                                            'at', extract(epoch FROM now())::float8,
                                            'message', 'the worker running this item was lost '
                                                       || attempts || ' times')
                     ELSE error END,
        finished_at = CASE WHEN NOT %(cancel)s AND %(lost)s AND attempts >= %(limit)s THEN now()
                           ELSE finished_at END
    WHERE batch_pk = %(pk)s AND status = 1 AND worker = ANY(%(workers)s)
    RETURNING status
)
UPDATE batches SET items_running = items_running - (SELECT count(*) FROM r),
                   items_pending = items_pending + (SELECT count(*) FROM r WHERE status = 0),
                   items_failed = items_failed + (SELECT count(*) FROM r WHERE status = 3),
                   items_cancelled = items_cancelled + (SELECT count(*) FROM r WHERE status = 4),
                   updated_at = clock_timestamp()
WHERE pk = %(pk)s
RETURNING *, (SELECT count(*) FROM r) AS released, (SELECT count(*) FROM r WHERE status = 0) AS returned;

-- Buffered items handed back unstarted: their attempt does not count.
-- name: release_items
WITH r AS (
    UPDATE items SET status = %(to)s, worker = NULL, attempts = attempts - 1
    WHERE batch_pk = %(pk)s AND seq = ANY(%(seqs)s) AND status = 1 AND worker = %(worker)s
    RETURNING 1
)
UPDATE batches SET items_running = items_running - (SELECT count(*) FROM r),
                   items_pending = items_pending + CASE WHEN %(to)s = 0 THEN (SELECT count(*) FROM r) ELSE 0 END,
                   items_cancelled = items_cancelled + CASE WHEN %(to)s = 4 THEN (SELECT count(*) FROM r) ELSE 0 END,
                   attempts_total = attempts_total - (SELECT count(*) FROM r),
                   updated_at = clock_timestamp()
WHERE pk = %(pk)s AND EXISTS (SELECT 1 FROM r)
RETURNING *;

-- claims -------------------------------------------------------------------------------------

-- name: runnable_batches
SELECT pk, id, tenant, processor, priority, parallel, items_pending, items_running,
       extract(epoch FROM last_claim_at)::float8 AS last_claim_at, status, spec, max_attempts, failing,
       budget, cost_total, cost_estimated, items_total, items_succeeded, items_failed,
       extract(epoch FROM clock_timestamp())::float8 AS db_now
FROM batches
WHERE status = 'running'
ORDER BY pk;

-- name: slots_of_others
SELECT s.batch_pk, b.processor, b.tenant, sum(s.slots)::int AS slots
FROM slots s JOIN batches b ON b.pk = s.batch_pk
WHERE s.worker_pk <> %(worker)s
GROUP BY s.batch_pk, b.processor, b.tenant;

-- name: get_buckets
SELECT processor, tokens, updated_at FROM rate_buckets WHERE processor = ANY(%(names)s);

-- name: put_bucket
INSERT INTO rate_buckets (processor, tokens, updated_at) VALUES (%(processor)s, %(tokens)s, %(now)s)
ON CONFLICT (processor) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at;

-- One statement writes every grant of a claim, and one drops the batches granted nothing.
-- name: upsert_slots
INSERT INTO slots (worker_pk, batch_pk, slots)
SELECT %(worker)s, g.pk, g.slots FROM unnest(%(pks)s::bigint[], %(slots)s::int[]) AS g(pk, slots)
ON CONFLICT (worker_pk, batch_pk) DO UPDATE SET slots = excluded.slots;

-- name: delete_slots_many
DELETE FROM slots WHERE worker_pk = %(worker)s AND batch_pk = ANY(%(pks)s);

-- One statement per batch and chunk: pick pending items in seq order, skipping rows another
-- transaction holds, lease them (reached by ctid: no join for the planner to misjudge), count them on
-- the batch, and return them as one JSON array of [seq, seq, key, payload, attempts] (Claimed's
-- order; rowid is the seq within the batch).
-- The caller holds the batch row's lock, taken before any item lock (the order every writer keeps).
-- name: claim_items
WITH picked AS (
    SELECT ctid AS tid FROM items
    WHERE batch_pk = %(pk)s AND status = 0 AND (not_before IS NULL OR not_before <= now())
    ORDER BY seq
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE items i SET status = 1, worker = %(worker)s, attempts = i.attempts + 1
    FROM picked p
    WHERE i.ctid = p.tid
    RETURNING i.seq, i.key, i.payload, i.attempts
), counted AS (
    UPDATE batches SET items_pending = items_pending - (SELECT count(*) FROM claimed),
                       items_running = items_running + (SELECT count(*) FROM claimed),
                       attempts_total = attempts_total + (SELECT count(*) FROM claimed),
                       last_claim_at = now(), updated_at = clock_timestamp()
    WHERE pk = %(pk)s AND EXISTS (SELECT 1 FROM claimed)
)
SELECT json_agg(json_build_array(seq, seq, key, payload, attempts) ORDER BY seq) FROM claimed;

-- claim_items for chosen items (an estimate's random sample), whatever the batch's status.
-- name: lease_items
WITH picked AS (
    SELECT ctid AS tid FROM items
    WHERE batch_pk = %(pk)s AND seq = ANY(%(seqs)s) AND status = 0
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE items i SET status = 1, worker = %(worker)s, attempts = i.attempts + 1
    FROM picked p
    WHERE i.ctid = p.tid
    RETURNING i.seq, i.key, i.payload, i.attempts
), counted AS (
    UPDATE batches SET items_pending = items_pending - (SELECT count(*) FROM claimed),
                       items_running = items_running + (SELECT count(*) FROM claimed),
                       attempts_total = attempts_total + (SELECT count(*) FROM claimed),
                       updated_at = clock_timestamp()
    WHERE pk = %(pk)s AND EXISTS (SELECT 1 FROM claimed)
)
SELECT json_agg(json_build_array(seq, seq, key, payload, attempts) ORDER BY seq) FROM claimed;

-- outcomes -----------------------------------------------------------------------------------

-- A group commit for one batch: the chunk arrives as one JSON array of outcomes, each
-- [batch_pk, seq, kind, result, error, started, finished, cost, not_before] with times in integer
-- microseconds. Only the lease holder's running items change (the fence); the batch counters
-- change in the same statement, which also returns the seqs it refused (usually none), so that the
-- caller knows which outcomes counted. Each outcome is parsed once as jsonb for its scalars (OFFSET 0
-- keeps the planner from inlining the cast into every use: 4x slower); the result is taken from the
-- json text, whose key order is kept.
-- A retry's not_before is kept as a delay from the outcome's finish, re-based on the database clock,
-- so a worker's skewed clock can neither shorten nor stretch a backoff.
-- The plan is pinned: without statistics (a new batch, or autovacuum off) the planner takes a join of
-- thousands of outcomes for one of a handful (seen on a 2M-item table never analysed: a nested loop
-- rescanning every outcome for every leased item: 56 s for a 50k-item batch). So each outcome looks
-- its item up by primary key alone (OFFSET 0 keeps the lookup a per-outcome subquery, and the lease
-- check out of its index choice), and the update reaches the rows by ctid.
-- name: record
WITH o AS (
    SELECT (b ->> 1)::int AS seq, b ->> 2 AS kind,
           CASE WHEN jsonb_typeof(b -> 3) = 'null' THEN NULL ELSE j -> 3 END AS result,
           CASE WHEN jsonb_typeof(b -> 4) = 'null' THEN NULL ELSE b -> 4 END AS error,
           (b ->> 5)::bigint AS started, (b ->> 6)::bigint AS finished,
           (b ->> 7)::float8 AS cost,
           ((b ->> 8)::float8 - (b ->> 6)::float8) / 1e6 AS delay
    FROM json_array_elements(%(outcomes)s::json) AS j, LATERAL (SELECT j::jsonb AS b OFFSET 0) AS p
), t AS (
    SELECT o.*, x.tid FROM o, LATERAL (
        SELECT ctid AS tid, status, worker FROM items WHERE batch_pk = %(pk)s AND seq = o.seq OFFSET 0) AS x
    WHERE x.status = 1 AND x.worker = %(worker)s
), u AS (
    UPDATE items i SET
        status = CASE o.kind WHEN 'ok' THEN 2 WHEN 'fail' THEN 3 ELSE 0 END,
        result = CASE WHEN o.kind = 'retry' THEN i.result ELSE o.result END,
        error = CASE WHEN o.kind = 'ok' THEN NULL ELSE o.error::json END,
        errors = CASE WHEN o.kind = 'ok' OR o.error IS NULL THEN i.errors
                      ELSE COALESCE(i.errors, '[]'::jsonb) || jsonb_build_array(o.error) END,
        not_before = CASE WHEN o.kind = 'retry'
                          THEN now() + make_interval(secs => greatest(COALESCE(o.delay, 0), 0))
                          ELSE i.not_before END,
        started_at = to_timestamp(o.started / 1e6), finished_at = to_timestamp(o.finished / 1e6),
        cost = o.cost, worker = NULL
    FROM t AS o
    WHERE i.ctid = o.tid
    RETURNING o.seq, o.kind, o.cost
), c AS (
    SELECT count(*) FILTER (WHERE kind = 'ok') AS ok, count(*) FILTER (WHERE kind = 'fail') AS fail,
           count(*) FILTER (WHERE kind = 'retry') AS retry, COALESCE(sum(cost), 0) AS cost
    FROM u
)
UPDATE batches b SET items_running = items_running - c.ok - c.fail - c.retry,
                     items_succeeded = items_succeeded + c.ok, items_failed = items_failed + c.fail,
                     items_pending = items_pending + c.retry, cost_total = cost_total + c.cost,
                     updated_at = clock_timestamp()
FROM c
WHERE b.pk = %(pk)s
RETURNING b.*, c.ok + c.fail + c.retry AS accepted,
          ARRAY(SELECT seq FROM o EXCEPT ALL SELECT seq FROM u) AS refused;

-- Concurrent group commits add to a processor's totals under its row lock: nothing is lost.
-- Buckets are added element by element; if the bounds changed (another length), they start again.
-- name: add_stats
INSERT INTO processor_stats AS p (processor, succeeded, failed, retried, duration_sum, buckets)
VALUES (%(processor)s, %(ok)s, %(fail)s, %(retry)s, %(dsum)s, %(buckets)s)
ON CONFLICT (processor) DO UPDATE SET
    succeeded = p.succeeded + excluded.succeeded, failed = p.failed + excluded.failed,
    retried = p.retried + excluded.retried, duration_sum = p.duration_sum + excluded.duration_sum,
    buckets = CASE WHEN cardinality(p.buckets) = cardinality(excluded.buckets)
                   THEN ARRAY(SELECT a + b FROM unnest(p.buckets, excluded.buckets) WITH ORDINALITY AS x(a, b, i)
                              ORDER BY i)
                   ELSE excluded.buckets END;

-- name: processor_stats
SELECT * FROM processor_stats ORDER BY processor;

-- name: tenant_usage
SELECT COALESCE(sum(items_pending), 0)::bigint AS queued, COALESCE(sum(items_running), 0)::bigint AS running
FROM batches
WHERE tenant = %(tenant)s AND status IN ('pending', 'running', 'paused', 'cancelling');

-- webhooks -----------------------------------------------------------------------------------

-- name: enqueue_delivery
INSERT INTO webhook_deliveries (id, batch_pk, batch_id, tenant, event, url, payload, next_attempt_at)
VALUES (%(id)s, %(batch_pk)s, %(batch_id)s, %(tenant)s, %(event)s, %(url)s, %(payload)s, clock_timestamp());

-- Progress enqueuers on several servers serialise here, so a batch never gets two progress events
-- from one round; the candidates are read after the lock, so they see the last holder's rows.
-- name: progress_lock
SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.batchyard.progress'));

-- name: progress_candidates
SELECT b.*, extract(epoch FROM clock_timestamp())::float8 AS db_now FROM batches b
WHERE b.status = 'running' AND (b.spec -> 'webhook' ->> 'progress')::boolean IS TRUE
  AND b.updated_at > COALESCE((SELECT max(d.created_at) FROM webhook_deliveries d
                               WHERE d.batch_pk = b.pk AND d.event = 'batch.progress'), '-infinity')
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                  WHERE d.batch_pk = b.pk AND d.event = 'batch.progress'
                    AND d.created_at > clock_timestamp() - make_interval(secs => %(interval)s));

-- Due deliveries are leased in one statement; SKIP LOCKED keeps two senders off the same rows.
-- name: claim_deliveries
UPDATE webhook_deliveries SET next_attempt_at = clock_timestamp() + make_interval(secs => %(lease)s)
WHERE id IN (SELECT id FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
             ORDER BY next_attempt_at
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED)
RETURNING id, batch_id, tenant, event, url, payload, extract(epoch FROM created_at)::float8 AS created,
          jsonb_array_length(attempts) AS n;

-- A delay, not a time: the next attempt is re-based on the database clock.
-- name: finish_delivery
UPDATE webhook_deliveries
SET attempts = attempts || jsonb_build_array(%(attempt)s::jsonb), status = %(status)s,
    next_attempt_at = clock_timestamp() + make_interval(secs => %(delay)s::float8),
    delivered_at = CASE WHEN %(status)s = 'delivered' THEN clock_timestamp() END
WHERE id = %(id)s AND status = 'pending';

-- name: deliveries_of
SELECT * FROM webhook_deliveries WHERE batch_id = %(batch_id)s ORDER BY created_at, id;

-- API keys and settings ----------------------------------------------------------------------

-- name: add_api_key
INSERT INTO api_keys (id, tenant, name, digest) VALUES (%(id)s, %(tenant)s, %(name)s, %(digest)s) RETURNING *;

-- name: find_api_key
SELECT * FROM api_keys WHERE digest = %(digest)s AND revoked_at IS NULL;

-- name: list_api_keys
SELECT * FROM api_keys ORDER BY created_at, id;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = COALESCE(revoked_at, clock_timestamp()) WHERE id = %(id)s RETURNING *;

-- name: get_setting
SELECT value FROM meta WHERE key = 'setting:' || %(key)s;

-- name: put_setting_once
INSERT INTO meta (key, value) VALUES ('setting:' || %(key)s, %(value)s) ON CONFLICT (key) DO NOTHING;
