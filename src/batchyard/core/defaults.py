"""Every tunable default, in one place."""

from __future__ import annotations

STORE_DIR = ".batchyard"
STORE_FILE = "batchyard.db"

LEASE_SECONDS = 30.0          # a worker silent this long is presumed dead; its items are reclaimed
HEARTBEAT_FRACTION = 1 / 3    # heartbeat every lease/3
GRACE_SECONDS = 10.0          # in-flight items get this long to finish on SIGTERM/SIGINT
STORE_RETRY_MAX_SECONDS = 5.0  # a worker whose store is unavailable (disk full, database down) retries this often

MAX_CLAIM = 4000              # items per claim transaction
BUFFER_SECONDS = 0.25         # claim ahead about this much work
FLUSH_ITEMS = 4000            # group commit when this many outcomes wait ...
FLUSH_SECONDS = 0.05          # ... or the oldest has waited this long
IDLE_POLL_SECONDS = 0.25      # how often an idle worker looks for work
IDLE_LISTEN_POLL_SECONDS = 5.0  # ... when its store announces new work (LISTEN): only for work nobody
                                # announces, such as slots another worker gave up
HEARTBEAT_MIN_SECONDS = 1.0   # an early heartbeat (the batches a worker runs changed) at most this often
STATE_POLL_SECONDS = 0.25     # how often a worker checks pause/cancel of batches it holds
INSERT_CHUNK = 5000           # items per insert statement when a batch is created

INSTANT_ITEM_SECONDS = 20e-6  # items quicker than this are pure CPU work: one thread lane runs them
PARALLEL = 8                  # parallel items per batch unless told otherwise
MAX_ATTEMPTS_LIMIT = 1000      # the most attempts a batch may ask for (stores keep it as a 64-bit int)
LOST_ATTEMPTS_GRACE = 5       # a worker lost this many times beyond max_attempts fails the item
SQLITE_BUSY_TIMEOUT_MS = 30000
TRACEBACK_TAIL_CHARS = 2000

# Item duration histogram buckets (seconds), shared by the stores' per-processor statistics and /metrics.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
WEBHOOK_TIMEOUT_SECONDS = 10.0
WEBHOOK_MAX_ATTEMPTS = 8          # backoff 5 s doubling: the last try is about 10 minutes after the event
WEBHOOK_BACKOFF_SECONDS = 5.0
WEBHOOK_PROGRESS_SECONDS = 5.0    # at most one batch.progress event per batch this often
