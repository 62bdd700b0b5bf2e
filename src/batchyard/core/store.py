"""The Store protocol: the few primitives the engine, worker and surfaces need from a database.

Stores implement it (``batchyard.store.sqlite``, ``batchyard.store.postgres``); ``core`` never imports
them. Hot-path values are plain tuples so that a million items do not mean a million objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, Protocol, runtime_checkable

from batchyard.core.models import (
    ApiKeyInfo,
    BatchInfo,
    BatchSpec,
    FileInfo,
    ItemInfo,
    NewItem,
    ProcessorStats,
    TimelinePoint,
    WebhookDelivery,
    WorkerInfo,
)
from batchyard.core.scheduling import Held


class Claimed(NamedTuple):
    """A claimed item. Stores return plain tuples in this field order (a million namedtuple
    constructions cost more than the claim itself); code may use the names or the indexes."""

    rowid: int
    seq: int
    key: str | None
    payload: Any  # the decoded payload
    attempts: int


class Outcome(NamedTuple):
    """What a worker records for one item; built as plain tuples in this order on the hot path."""

    batch_pk: int
    rowid: int
    kind: str  # "ok" | "fail" | "retry"
    result: dict[str, Any] | None  # JSON-able; stores encode a whole chunk of outcomes at once
    error: dict[str, Any] | None
    started: int  # microseconds since the epoch
    finished: int
    cost: float | None
    not_before: int | None  # microseconds since the epoch


OK, FAIL, RETRY = "ok", "fail", "retry"


@dataclass(frozen=True)
class BatchRuntime:
    """What a worker needs to run a batch's items."""

    pk: int
    batch_id: str
    processor: str
    params: dict[str, Any]
    max_attempts: int
    status: str
    cost_per_item: float
    pending: int = 0  # items still claimable after this claim (0: do not ask again at once)
    resource: dict[str, Any] | None = None  # the batch's shared resource, once the worker has it (ctx.resource)


@dataclass
class ClaimResult:
    grants: dict[int, int] = field(default_factory=dict)
    items: dict[int, list[Claimed]] = field(default_factory=dict)
    batches: dict[int, BatchRuntime] = field(default_factory=dict)


@dataclass
class RecordResult:
    accepted: int = 0
    refused: int = 0


class Reaped(NamedTuple):
    """What a reap recovered: dead workers removed, their items returned, the batches those were in."""

    workers: int = 0
    items: int = 0
    batches: int = 0


class IdempotencyRecord(NamedTuple):
    """The batch a tenant's idempotency key created, and the hash of the request that created it."""

    batch_id: str
    request_hash: str
    created_at: float  # seconds since the epoch


class ResourceClaim(NamedTuple):
    """What ``acquire_resource`` answers: ``ready`` (``state`` is the resource), ``setup`` (the caller sets it up;
    ``state`` is what an interrupted setup checkpointed, or the closed resource of a re-opened batch, or None),
    or ``wait`` (another live worker is setting it up)."""

    status: str
    state: dict[str, Any] | None = None


class DueDelivery(NamedTuple):
    """A webhook delivery claimed for sending (its lease keeps other servers off it for a while)."""

    delivery_id: str
    batch_id: str
    tenant: str
    event: str
    url: str
    payload: str  # the batch snapshot taken when the event happened, as JSON
    created_at: float
    attempts: int


@runtime_checkable
class Store(Protocol):
    url: str

    def close(self) -> None: ...

    # batches
    def create_batch(self, spec: BatchSpec, items: Iterable[NewItem], start: bool = True) -> BatchInfo: ...
    def get_batch(self, batch_id: str) -> BatchInfo: ...
    def find_resumable(self, fingerprint: str) -> BatchInfo | None: ...
    # Newest batch first; with ``updated_after`` (inclusive, seconds since the epoch) only the batches
    # changed since then, oldest change first, so that a follower paging by updated_at misses none.
    def list_batches(self, *, status: str | None = None, processor: str | None = None,
                     tag: str | None = None, limit: int = 100, before: str | None = None,
                     tenant: str | None = None, created_after: float | None = None,
                     created_before: float | None = None, updated_after: float | None = None) -> list[BatchInfo]: ...
    def transition(self, batch_id: str, action: str, reason: str | None = None) -> BatchInfo: ...
    def set_budget(self, batch_id: str, budget: float | None) -> BatchInfo:
        """Set (None: remove) the most the batch may spend. Claims never start items past it, counting the
        items in flight at their expected cost (``core.cost``); a running batch that has items left but none
        that fits is paused with reason ``budget_reached`` (here, if the new budget is already reached)."""
        ...
    def delete_batch(self, batch_id: str) -> None: ...
    def cleanup(self, older_than: float) -> list[str]: ...

    # items
    def iter_items(self, batch_id: str, *, status: str | None = None, after_seq: int = 0,
                   limit: int | None = None) -> Iterator[ItemInfo]: ...
    def get_item(self, batch_id: str, item_id: str) -> ItemInfo: ...
    def result_stats(self, batch_id: str, limit: int = 1000) -> dict[str, dict[str, float]]: ...
    def timeline(self, batch_id: str, bucket_seconds: float | None = None) -> list[TimelinePoint]:
        """Succeeded and failed items per time bucket (by ``finished_at``), oldest first, empty buckets
        included. The width comes from ``models.timeline_bucket`` over the batch's run so far (at most
        ``TIMELINE_POINTS`` points); ``bucket_seconds`` asks for a width, widened if it would give more."""
        ...

    # workers
    def register_worker(self, name: str, processors: list[str], concurrency: int) -> int: ...
    def heartbeat(self, worker_pk: int, running: dict[str, int]) -> bool: ...
    def unregister_worker(self, worker_pk: int) -> None: ...
    def list_workers(self) -> list[WorkerInfo]: ...
    def claim(self, worker_pk: int, processors: dict[str, Any], capacity: int,
              held: dict[int, Held], only: set[str] | None = None,
              tenant_cap: int | None = None) -> ClaimResult:
        """``tenant_cap``: the most items one tenant may have running across all workers."""
        ...
    def lease_items(self, worker_pk: int, batch_id: str, seqs: list[int]) -> ClaimResult:
        """Lease these pending items (by seq) of a batch that is not final, whatever its status (an estimate
        runs a sample of a pending batch); items that are not pending are left out. The result holds the
        batch's runtime and the items leased, as ``claim`` returns them; no slots are taken."""
        ...
    def record(self, worker_pk: int, outcomes: list[Outcome]) -> RecordResult: ...

    # shared resources per batch (``core.resources``): one set-up per batch, whatever the workers and restarts
    def acquire_resource(self, batch_pk: int, worker_pk: int) -> ResourceClaim:
        """The batch's resource if it is ready; else the set-up lock for the caller, unless a live worker holds
        it (a worker no longer registered holds nothing: its successor inherits its checkpoint)."""
        ...
    def save_resource(self, batch_pk: int, worker_pk: int, state: dict[str, Any], *, ready: bool,
                      capacity: float | None = None, cost: float = 0.0) -> bool:
        """Store a checkpoint (``ready=False``) or the finished resource, if the caller still holds the set-up
        lock; False if it does not (it was presumed dead, and another took over). ``cost`` (what the setup cost)
        is added to the batch's spent total in the same transaction."""
        ...
    def release_resource(self, batch_pk: int, worker_pk: int) -> None:
        """Let go of the set-up lock (a failed setup), keeping any checkpoint for the next one."""
        ...
    def use_resource(self, usage: dict[int, float]) -> None:
        """Add what items used of their batch's resource (batch pk -> amount), for its utilisation."""
        ...
    def resources_to_close(self, processors: list[str]) -> list[tuple[int, str, str, dict[str, Any]]]:
        """(batch pk, batch id, processor, params) of final batches of these processors whose resource is
        still open."""
        ...
    def set_throttle(self, note: str | None, processors: list[str], only: set[str] | None = None) -> None:
        """Write (None: clear) a worker's throttle note on the running batches it serves (of these processors;
        of these batch ids, if ``only``). A note shows while it is younger than a lease."""
        ...
    def close_resource(self, batch_pk: int) -> dict[str, Any] | None:
        """Mark the batch's resource closed; its state if this call closed it (the caller tears it down), None
        if it was not open (never set up, or closed already)."""
        ...
    def release(self, worker_pk: int, batch_pk: int, rowids: list[int]) -> None: ...
    def drop_slots(self, worker_pk: int, batch_pk: int) -> None: ...
    def reap(self, lease_seconds: float) -> Reaped: ...
    def batch_states(self, pks: Iterable[int]) -> dict[int, str]: ...
    def wait_for_work(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for new claimable work to be announced (a batch created,
        started, resumed or retried; items handed back); True as soon as it is. A store with no way to
        be told (SQLite) returns False at once rather than sleeping, so the caller's own wake-ups (a
        stop request) are not delayed: the caller then polls, as it would anyway."""
        ...
    def processor_stats(self) -> dict[str, ProcessorStats]: ...
    def tenant_usage(self, tenant: str) -> tuple[int, int]:
        """(items queued, items running) over the tenant's unfinished batches."""
        ...

    # webhooks: a final transition writes its delivery in the same transaction (an outbox)
    def enqueue_progress_webhooks(self, interval: float) -> int: ...
    def claim_deliveries(self, limit: int, lease_seconds: float) -> list[DueDelivery]: ...
    def finish_delivery(self, delivery_id: str, attempt: dict[str, Any], next_attempt_at: float | None,
                        delivered: bool) -> None: ...
    def list_deliveries(self, batch_id: str) -> list[WebhookDelivery]: ...

    # idempotency keys: ``create_batch`` with ``spec.idempotency`` records the key in its own transaction and
    # raises ``IdempotencyConflict`` (creating nothing) when the tenant used the key already
    def find_idempotency_key(self, tenant: str, key: str) -> IdempotencyRecord | None:
        """What the tenant's ``key`` created; None when unused. A key is deleted with its batch."""
        ...

    # API keys (the secret is never stored: only its SHA-256)
    def add_api_key(self, key_id: str, tenant: str, name: str | None, digest: str) -> ApiKeyInfo: ...
    def find_api_key(self, digest: str) -> ApiKeyInfo | None: ...
    def list_api_keys(self) -> list[ApiKeyInfo]: ...
    def revoke_api_key(self, key_id: str) -> ApiKeyInfo: ...

    # small named values the server keeps with the data (e.g. its generated webhook signing secret)
    def get_setting(self, key: str) -> str | None: ...
    def put_setting_once(self, key: str, value: str) -> str:
        """Store ``value`` unless the key has one; return the value that is stored."""
        ...

    # files: uploads and produced outputs, kept with the data so every surface can list, fetch and delete them
    def add_file(self, tenant: str, purpose: str, filename: str, content: bytes | IO[bytes], *,
                 file_id: str | None = None, meta: dict[str, Any] | None = None) -> FileInfo:
        """Store ``content`` (bytes, or a seekable binary file read from its current position to its end).

        ``file_id`` lets a writer choose the id (produced files get ids derived from what produced them, so
        two writers racing write one file): when a file with that id exists it is returned unchanged."""
        ...
    def get_file(self, file_id: str) -> FileInfo:
        """``NotFound`` (kind ``file``) when there is none."""
        ...
    def file_content(self, file_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The bytes in chunks, read as they are consumed (a large file never sits in memory)."""
        ...
    def list_files(self, *, tenant: str | None = None, purpose: str | None = None, limit: int = 100,
                   after: str | None = None) -> list[FileInfo]:
        """Newest first; ``after`` (a file id) pages on from that file."""
        ...
    def delete_file(self, file_id: str) -> None: ...

    # shared state: small JSON documents that every worker on the store reads and changes atomically
    def update_shared_state(self, key: str, update: Callable[[dict[str, Any] | None, float], dict[str, Any]]
                            ) -> dict[str, Any]:
        """Replace the document at ``key`` by ``update(current or None, now)`` in one transaction, so concurrent
        updaters (threads, processes, machines) serialise; ``now`` is the store's clock (the database's, for
        stores shared by machines), in seconds since the epoch. Returns the new document. ``update`` must be
        quick and pure: it runs with the row locked."""
        ...
    def get_shared_state(self, key: str) -> dict[str, Any] | None: ...
