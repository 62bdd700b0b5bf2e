-- name: insert_batch
INSERT INTO batches (id, tenant, processor, status, priority, parallel, max_attempts, spec, fingerprint,
                     created_at, updated_at, started_at, running_since)
VALUES (:id, :tenant, :processor, :status, :priority, :parallel, :max_attempts, :spec, :fingerprint,
        :now, :now, :started_at, :started_at);

-- name: next_item_id
SELECT COALESCE(MAX(id), 0) + 1 FROM items;

-- Hot-path statements take and return whole chunks as one JSON value: one statement, one
-- sqlite3_step, so the GIL is released once per chunk instead of once per row (a thread
-- waiting to re-take the GIL after every row starves when processor threads keep it busy).

-- name: insert_items
INSERT INTO items (id, key, payload)
SELECT :first + key, value ->> 0, value -> 1 FROM json_each(:items);

-- name: finish_insert
UPDATE batches SET first_item = :first, last_item = :last, items_total = :n, items_pending = :n,
                   budget = :budget, cost_estimated = :estimated
WHERE pk = :pk;

-- name: get_batch
SELECT * FROM batches WHERE id = ?;

-- name: find_resumable
SELECT * FROM batches WHERE fingerprint = ? AND status != 'cancelled' ORDER BY pk DESC LIMIT 1;

-- name: runnable_batches
SELECT pk, id, tenant, processor, priority, parallel, items_pending, items_running, last_claim_at, first_item,
       last_item, status, spec, max_attempts, failing, budget, cost_total, cost_estimated, items_total,
       items_succeeded, items_failed
FROM batches
WHERE status = 'running';

-- name: slots_of_others
SELECT s.batch_pk, b.processor, SUM(s.slots), b.tenant
FROM slots s JOIN batches b ON b.pk = s.batch_pk
WHERE s.worker_pk != ?
GROUP BY s.batch_pk, b.processor, b.tenant;

-- name: claim_range
SELECT MIN(id), MAX(id), COUNT(*) FROM (
    SELECT id FROM items
    WHERE status = 0 AND id BETWEEN :first AND :last AND (not_before IS NULL OR not_before <= :now)
    ORDER BY id LIMIT :n);

-- name: claim_items
UPDATE items SET status = 1, worker = :worker, claim = :claim, attempts = attempts + 1
WHERE id BETWEEN :lo AND :hi AND status = 0 AND (not_before IS NULL OR not_before <= :now);

-- name: claimed_items
SELECT json_group_array(json_array(id, id - :first + 1, key, json(payload), attempts))
FROM items WHERE id BETWEEN :lo AND :hi AND claim = :claim AND status = 1;

-- name: count_claimed
UPDATE batches SET items_pending = items_pending - :n, items_running = items_running + :n,
                   attempts_total = attempts_total + :n, last_claim_at = :now, updated_at = :now
WHERE pk = :pk;

-- name: upsert_slots
INSERT INTO slots (worker_pk, batch_pk, slots) VALUES (?, ?, ?)
ON CONFLICT (worker_pk, batch_pk) DO UPDATE SET slots = excluded.slots;

-- name: delete_slots
DELETE FROM slots WHERE worker_pk = ? AND batch_pk = ?;

-- name: get_bucket
SELECT tokens, updated_at FROM rate_buckets WHERE processor = ?;

-- name: put_bucket
INSERT INTO rate_buckets (processor, tokens, updated_at) VALUES (?, ?, ?)
ON CONFLICT (processor) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at;

-- Outcomes arrive as a JSON array of [batch_pk, rowid, kind, result, error, started, finished, cost,
-- not_before]; result and error are JSON values (or null); times are integer microseconds (a float's
-- shortest repr costs more to print than the rest of the outcome).

-- name: record_ok
UPDATE items SET status = 2, result = nullif(j.value -> 3, 'null'), error = NULL, started_at = (j.value ->> 5) / 1e6,
                 finished_at = (j.value ->> 6) / 1e6, cost = j.value ->> 7, worker = NULL
FROM json_each(:outcomes) AS j
WHERE items.id = (j.value ->> 1) AND items.status = 1 AND items.worker = :worker;

-- name: record_fail
UPDATE items SET status = 3, error = j.value -> 4,
                 errors = json_insert(COALESCE(errors, '[]'), '$[#]', json(j.value -> 4)),
                 result = nullif(j.value -> 3, 'null'), started_at = (j.value ->> 5) / 1e6, finished_at = (j.value ->> 6) / 1e6,
                 cost = j.value ->> 7, worker = NULL
FROM json_each(:outcomes) AS j
WHERE items.id = (j.value ->> 1) AND items.status = 1 AND items.worker = :worker;

-- name: record_retry
UPDATE items SET status = 0, error = j.value -> 4,
                 errors = json_insert(COALESCE(errors, '[]'), '$[#]', json(j.value -> 4)),
                 not_before = (j.value ->> 8) / 1e6, started_at = (j.value ->> 5) / 1e6, finished_at = (j.value ->> 6) / 1e6,
                 cost = j.value ->> 7, worker = NULL
FROM json_each(:outcomes) AS j
WHERE items.id = (j.value ->> 1) AND items.status = 1 AND items.worker = :worker;

-- name: count_recorded
UPDATE batches SET items_running = items_running - :ok - :fail - :retry,
                   items_succeeded = items_succeeded + :ok, items_failed = items_failed + :fail,
                   items_pending = items_pending + :retry, cost_total = cost_total + :cost,
                   updated_at = :now
WHERE pk = :pk
RETURNING processor;

-- name: batch_by_pk
SELECT * FROM batches WHERE pk = ?;

-- name: cancel_pending_items
UPDATE items SET status = 4 WHERE status = 0 AND id BETWEEN ? AND ?;

-- name: release_items
UPDATE items SET status = :to, worker = NULL, attempts = attempts - 1
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 1 AND worker = :worker;

-- name: register_worker
INSERT INTO workers (id, name, hostname, pid, pid_started, processors, concurrency, started_at, heartbeat_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: heartbeat
UPDATE workers SET heartbeat_at = ?, running = ? WHERE pk = ?;

-- name: delete_worker
DELETE FROM workers WHERE pk = ?;

-- name: worker_slots_delete
DELETE FROM slots WHERE worker_pk = ?;

-- name: all_workers
SELECT * FROM workers ORDER BY pk;

-- name: batches_with_running
SELECT pk, first_item, last_item, status, max_attempts FROM batches WHERE items_running > 0;

-- name: retry_failed_items
UPDATE items SET status = 0, attempts = 0, not_before = NULL WHERE status = 3 AND id BETWEEN ? AND ?;

-- name: delete_items
DELETE FROM items WHERE id BETWEEN ? AND ?;

-- name: delete_batch
DELETE FROM batches WHERE pk = ?;

-- name: old_final_batches
SELECT pk, id, first_item, last_item FROM batches
WHERE status IN ('completed', 'failed', 'cancelled') AND COALESCE(completed_at, updated_at) < ?;

-- name: batch_states
SELECT pk, status FROM batches WHERE pk IN (SELECT value FROM json_each(?));

-- name: result_stats
-- Numeric fields of succeeded items' results, nested ones by dotted name; array elements and
-- booleans are not fields. The aggregation runs in SQLite, in one pass, instead of in Python.
SELECT substr(t.fullkey, 3) AS field, COUNT(*), SUM(t.value), MIN(t.value), MAX(t.value)
FROM items, json_tree(items.result) AS t
WHERE items.id BETWEEN :first AND :last AND items.status = 2 AND items.result IS NOT NULL
  AND t.type IN ('integer', 'real') AND t.fullkey NOT LIKE '%]'
GROUP BY field
ORDER BY COUNT(*) DESC, field
LIMIT :limit;

-- name: timeline
-- Succeeded (2) and failed (3) items per bucket of finished_at, for the dashboard's throughput chart; the
-- finished_at values are positive, so CAST truncates as floor() would (which not every SQLite build has).
SELECT CAST(finished_at / :bucket AS INTEGER) AS n, SUM(status = 2), SUM(status = 3)
FROM items
WHERE id BETWEEN :first AND :last AND status IN (2, 3) AND finished_at IS NOT NULL
GROUP BY n;

-- name: enqueue_delivery
INSERT INTO webhook_deliveries (id, batch_pk, batch_id, tenant, event, url, payload, created_at, next_attempt_at)
VALUES (:id, :batch_pk, :batch_id, :tenant, :event, :url, :payload, :now, :now);

-- name: progress_candidates
SELECT b.* FROM batches b
WHERE b.status = 'running' AND json_extract(b.spec, '$.webhook.progress') = 1
  AND b.updated_at > COALESCE((SELECT max(d.created_at) FROM webhook_deliveries d
                               WHERE d.batch_pk = b.pk AND d.event = 'batch.progress'), 0)
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                  WHERE d.batch_pk = b.pk AND d.event = 'batch.progress' AND d.created_at > :since);

-- name: due_deliveries
SELECT id, batch_id, tenant, event, url, payload, created_at, json_array_length(attempts) AS n
FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= :now
ORDER BY next_attempt_at LIMIT :limit;

-- name: lease_delivery
UPDATE webhook_deliveries SET next_attempt_at = :until WHERE id = :id AND status = 'pending';

-- name: finish_delivery
UPDATE webhook_deliveries
SET attempts = json_insert(attempts, '$[#]', json(:attempt)), status = :status,
    next_attempt_at = :next, delivered_at = CASE WHEN :status = 'delivered' THEN :now END
WHERE id = :id AND status = 'pending';

-- name: deliveries_of
SELECT * FROM webhook_deliveries WHERE batch_id = ? ORDER BY created_at, id;

-- name: add_api_key
INSERT INTO api_keys (id, tenant, name, digest, created_at) VALUES (?, ?, ?, ?, ?);

-- name: find_api_key
SELECT * FROM api_keys WHERE digest = ? AND revoked_at IS NULL;

-- name: get_stats
SELECT * FROM processor_stats WHERE processor = ?;

-- name: put_stats
INSERT INTO processor_stats (processor, succeeded, failed, retried, duration_sum, buckets)
VALUES (:processor, :ok, :fail, :retry, :dsum, :buckets)
ON CONFLICT (processor) DO UPDATE SET succeeded = succeeded + :ok, failed = failed + :fail,
    retried = retried + :retry, duration_sum = duration_sum + :dsum, buckets = :buckets;

-- name: tenant_usage
SELECT COALESCE(sum(items_pending), 0), COALESCE(sum(items_running), 0) FROM batches
WHERE tenant = ? AND status IN ('pending', 'running', 'paused', 'cancelling');
