"""Values every layer shares: what a batch is created with, what status reads return, item views."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batchyard.core import cost, defaults
from batchyard.core.states import BatchStatus, ItemStatus

DEFAULT_TENANT = "default"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITY_RANK = {Priority.HIGH: 2, Priority.NORMAL: 1, Priority.LOW: 0}
RANK_PRIORITY = {v: k for k, v in PRIORITY_RANK.items()}


def ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


class FailurePolicy(BaseModel):
    """Stop the batch when more than ``max_failures`` items, or more than ``max_failure_rate`` of all
    items, have failed. The remaining items are then cancelled and the batch ends ``failed``."""

    model_config = ConfigDict(frozen=True)
    max_failures: int | None = Field(None, ge=0)
    max_failure_rate: float | None = Field(None, ge=0, le=1)

    def tripped(self, failed: int, total: int) -> str | None:
        if self.max_failures is not None and failed > self.max_failures:
            return f"{failed} items failed, more than max_failures={self.max_failures}"
        if self.max_failure_rate is not None and total and failed / total > self.max_failure_rate:
            return (f"{failed} of {total} items failed ({failed / total:.1%}), "
                    f"more than max_failure_rate={self.max_failure_rate:g}")
        return None


class Webhook(BaseModel):
    """Where a batch's events are POSTed (signed per Standard Webhooks): final states always, progress if asked."""

    model_config = ConfigDict(frozen=True)
    # The pattern says only the scheme: whether the host may be called is the server's SSRF guard's call.
    url: str = Field(description="An http(s) URL.", max_length=2000,
                     json_schema_extra={"pattern": "^[hH][tT][tT][pP][sS]?://"})

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.lower().startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {v[:100]!r}")
        return v
    progress: bool = Field(False, description="Also send batch.progress events, at most every few seconds.")

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, v: Any) -> Any:
        return {"url": v} if isinstance(v, str) else v



WEBHOOK_EVENTS = ("batch.completed", "batch.failed", "batch.cancelled", "batch.progress")


class Idempotency(BaseModel):
    """A submission's idempotency key (HTTP ``Idempotency-Key``) and a hash of the request it came with.

    A store creates at most one batch per tenant and key, recording the key in the transaction that creates
    the batch, so two racing retries cannot both create one."""

    model_config = ConfigDict(frozen=True)
    key: str = Field(min_length=1, max_length=255)
    request_hash: str


class BatchSpec(BaseModel):
    """Everything a batch is created with, apart from its items."""

    processor: str
    params: dict[str, Any] = Field(default_factory=dict)
    parallel: int = Field(8, ge=1, le=100_000)
    priority: Priority = Priority.NORMAL
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    max_attempts: int = Field(3, ge=1, le=defaults.MAX_ATTEMPTS_LIMIT)
    webhook: Webhook | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    tenant: str = DEFAULT_TENANT
    idempotency: Idempotency | None = None  # kept in the store's own table, not in the batch's spec
    source: str | None = None
    fingerprint: str | None = None
    cost_per_item: float = 0.0
    cost_unit: str = "USD"
    budget: float | None = Field(None, ge=0, description="The most the batch may spend, in cost_unit: it pauses "
                                                        "(budget_reached) before it would spend more.")
    # Creators that price each item (a cost model) total it while the items stream in: stores read this once
    # they have consumed the items, in the transaction that creates the batch.
    cost_estimated: float | None = Field(None, ge=0)

    @field_validator("tags")
    @classmethod
    def _strip_tags(cls, v: list[str]) -> list[str]:
        return [t.strip() for t in v if t.strip()]


class Counts(BaseModel):
    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class ResourceInfo(BaseModel):
    """A batch's shared resource (see ``core.resources``): its state as every item gets it, and how full it is."""

    status: str = Field(description="setup (being set up), ready, or closed (torn down once the batch ended).")
    state: dict[str, Any] | None = Field(None, description="What setup returned (or checkpointed, during setup).")
    capacity: float | None = Field(None, description="How much it holds, in the unit items report their use in.")
    used: float = Field(0.0, description="What the items used of it so far.")
    utilization_percent: float | None = Field(None, description="used / capacity, in percent.")

    @model_validator(mode="after")
    def _utilization(self) -> ResourceInfo:
        if self.capacity:
            self.utilization_percent = round(100.0 * self.used / self.capacity, 4)
        return self


class BatchInfo(BaseModel):
    """A batch as every surface reports it. Reads are O(1): counters live on the batch row."""

    batch_id: str
    tenant: str
    processor: str
    status: BatchStatus
    pause_reason: str | None = None
    status_reason: str | None = None
    priority: Priority
    parallel: int
    params: dict[str, Any]
    failure_policy: FailurePolicy
    max_attempts: int
    webhook: Webhook | None
    description: str | None
    tags: list[str]
    source: str | None
    fingerprint: str | None
    items_total: int
    items_pending: int
    items_running: int
    items_succeeded: int
    items_failed: int
    items_cancelled: int
    attempts_total: int
    cost_total: float = Field(description="Spent so far: the actual cost of every attempt that finished.")
    cost_unit: str
    cost_estimated: float | None = Field(None, description="The estimated total for every item (the cost model's, "
                                                           "or a sample's extrapolation); null without one.")
    cost_projected: float | None = Field(None, description="Spent so far plus the items not done at the expected "
                                                           "cost each (the higher of the estimate's and the actual "
                                                           "average); null while unknown.")
    budget: float | None = Field(None, description="The most the batch may spend; at it, it pauses with "
                                                   "pause_reason budget_reached.")
    resource: ResourceInfo | None = Field(None, description="The processor's shared resource for this batch, "
                                                            "once a worker started setting it up.")
    throttled: str | None = Field(None, description="Why workers stopped claiming its items for now (memory, disk "
                                                    "or CPU above their thresholds), while that lasts.")
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    active_seconds: float = Field(description="Seconds spent in the running state so far.")
    progress_percent: float = 0.0
    throughput_per_s: float | None = None
    estimated_completion: datetime | None = None

    @model_validator(mode="after")
    def _derive(self) -> BatchInfo:
        done = self.items_succeeded + self.items_failed + self.items_cancelled
        self.progress_percent = round(100.0 * done / self.items_total, 2) if self.items_total else 100.0
        processed = self.items_succeeded + self.items_failed
        if self.active_seconds > 0 and processed:
            self.throughput_per_s = round(processed / self.active_seconds, 3)
        remaining = self.items_pending + self.items_running
        if self.status == BatchStatus.RUNNING and self.throughput_per_s and remaining:
            eta = remaining / self.throughput_per_s
            self.estimated_completion = datetime.fromtimestamp(self.updated_at.timestamp(), UTC) \
                if eta <= 0 else datetime.fromtimestamp(datetime.now(UTC).timestamp() + eta, UTC)
        elif self.status in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED):
            self.estimated_completion = self.completed_at
        expected = cost.per_item(self.cost_estimated, self.items_total, self.cost_total, processed)
        self.cost_projected = cost.projected(self.cost_total, remaining, expected)
        return self

    @property
    def counts(self) -> Counts:
        return Counts(total=self.items_total, pending=self.items_pending, running=self.items_running,
                      succeeded=self.items_succeeded, failed=self.items_failed,
                      cancelled=self.items_cancelled)

    @property
    def is_final(self) -> bool:
        return self.status in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED)


class SampleReport(BaseModel):
    """The items an estimate ran for real: their outcomes are kept in the batch and never run again."""

    size: int = Field(description="Items run.")
    succeeded: int
    failed: int = Field(description="Failed for good, or to be retried when the batch runs.")
    cost: float = Field(description="Their actual cost, in the batch's cost unit.")
    seconds: float = Field(description="Wall-clock time the sample took.")
    mean_item_seconds: float | None = Field(None, description="Mean time one item took.")


class Estimate(BaseModel):
    """What a batch would cost and how long it would take, before it runs."""

    processor: str
    items: int
    method: str = Field(description="'model': the processor's cost model (or fixed cost per item) over every "
                                    "item; 'sample': a random sample run for real, extrapolated.")
    cost_unit: str
    cost_estimated: float | None = Field(None, description="The estimated total; null when nothing says what "
                                                           "items cost.")
    cost_per_item: float | None = Field(None, description="The expected cost of one item.")
    cost_model_total: float | None = Field(None, description="The processor's own cost model over every item, "
                                                             "for comparison with a sample.")
    duration_s: float | None = Field(None, description="Estimated wall-clock time at the batch's parallelism "
                                                       "(and its processor's rate limit); null when unknown.")
    parallel: int
    sample: SampleReport | None = None
    batch_id: str | None = Field(None, description="With a sample: the batch created for it (pending until "
                                                   "started); running it skips the items already sampled.")


class ItemError(BaseModel):
    type: str
    message: str
    traceback: str | None = None
    attempt: int | None = None
    at: datetime | None = None


class ItemInfo(BaseModel):
    batch_id: str
    item_id: str
    seq: int
    status: ItemStatus
    attempts: int
    payload: Any
    result: Any = None
    error: ItemError | None = None
    errors: list[ItemError] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    cost: float | None = None
    not_before: datetime | None = None


class NewItem(BaseModel):
    """An item to add to a batch: an optional caller-chosen id and the payload."""

    key: str | None = None
    payload: Any = None


class FileInfo(BaseModel):
    """A file kept in the store: an upload (an adapter's input) or something produced (an output file)."""

    file_id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: datetime
    meta: dict[str, Any] = Field(default_factory=dict, description="Small JSON facts the writer keeps with it.")


class WorkerInfo(BaseModel):
    worker_id: str
    name: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    processors: list[str]
    concurrency: int
    running: dict[str, int] = Field(default_factory=dict)


class DeliveryAttempt(BaseModel):
    at: datetime
    status_code: int | None = Field(None, description="The receiver's HTTP status; None when none came back.")
    error: str | None = None
    duration_ms: float


class WebhookDelivery(BaseModel):
    """One event for one batch's webhook: the outbox row and every attempt to deliver it."""

    delivery_id: str = Field(description="Also the `webhook-id` header: receivers de-duplicate on it.")
    batch_id: str
    event: str
    url: str
    status: str = Field(description="pending (more attempts due), delivered, or failed (attempts exhausted).")
    created_at: datetime
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    attempts: list[DeliveryAttempt] = Field(default_factory=list)


class ApiKeyInfo(BaseModel):
    """An API key as listed: never the secret, which is shown once at creation and stored hashed."""

    key_id: str
    tenant: str
    name: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class ProcessorStats(BaseModel):
    """Monotonic per-processor totals, written with the outcomes (they survive deleted batches)."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    duration_sum: float = 0.0
    # Non-cumulative counts per defaults.DURATION_BUCKETS upper bound, plus one for +Inf.
    buckets: list[int] = Field(default_factory=list)


# A batch's timeline (the dashboard's throughput chart) has at most this many points, whatever its length.
TIMELINE_POINTS = 200
# Bucket widths a person reads at a glance (seconds); past a day, whole days.
_TIMELINE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


class TimelinePoint(BaseModel):
    """Items of a batch that reached a final outcome in one time bucket, by their ``finished_at``."""

    at: datetime = Field(description="Start of the bucket.")
    seconds: float = Field(description="Width of the bucket: succeeded / seconds is the throughput then.")
    succeeded: int
    failed: int


def timeline_bucket(span: float, at_least: float | None = None) -> float:
    """The bucket width for a timeline over ``span`` seconds: the smallest round width that gives at most
    ``TIMELINE_POINTS`` buckets, and no narrower than ``at_least`` when the caller asks for a width."""
    need = max(span, 0.0) / TIMELINE_POINTS
    if at_least is not None and at_least >= need:
        return float(at_least)
    for step in _TIMELINE_STEPS:
        if step >= need:
            return float(step)
    return float(-(-need // 86400) * 86400)


def timeline_points(rows: Iterable[tuple[int, int, int]], bucket: float) -> list[TimelinePoint]:
    """Points from a store's ``(bucket number, succeeded, failed)`` rows (bucket number = floor(finished_at /
    bucket)), with the empty buckets in between filled in (a pause shows as zero, not as a straight line).

    The store chose ``bucket`` from the batch's own start and end times; items timed by a worker whose clock
    is off can still spread wider, so too many buckets are merged (by a whole factor, which keeps them
    aligned) rather than returned."""
    found = sorted(rows)
    if not found:
        return []
    first, last = found[0][0], found[-1][0]
    factor = max(1, -(-(last - first + 1) // TIMELINE_POINTS))
    merged: dict[int, list[int]] = {}
    for n, ok, failed in found:
        acc = merged.setdefault(n // factor, [0, 0])
        acc[0] += ok
        acc[1] += failed
    width = bucket * factor
    lo, hi = first // factor, last // factor
    return [TimelinePoint(at=datetime.fromtimestamp(n * width, UTC), seconds=width,
                          succeeded=merged.get(n, (0, 0))[0], failed=merged.get(n, (0, 0))[1])
            for n in range(lo, hi + 1)]


def new_batch_id() -> str:
    """Sortable and unique: ``batch_20250828_140600_a1b2c3d4``."""
    import secrets

    return f"batch_{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(4)}"
