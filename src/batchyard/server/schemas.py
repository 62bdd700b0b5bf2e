"""The REST API's request and response bodies: the one module the server and the client share.

Pydantic only (plus ``batchyard.core.models``): importing it must never pull in FastAPI, so that
``batchyard.Client`` works where only httpx is installed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from batchyard.core.defaults import MAX_ATTEMPTS_LIMIT
from batchyard.core.models import (
    BatchInfo,
    FailurePolicy,
    ItemInfo,
    Priority,
    TimelinePoint,
    Webhook,
    WebhookDelivery,
    WorkerInfo,
)

API_PREFIX = "/api/v1"
RESULT_FORMATS = ("json", "csv", "jsonl")
ResultFormat = Literal["json", "csv", "jsonl"]
InputFormatName = Literal["csv", "jsonl", "json", "text"]


class SubmitOptions(BaseModel):
    """What every submission shares, whether its items come inline, from a URI or from an upload.

    Unknown fields are refused (422), so that a misspelt option is never silently ignored.
    """

    model_config = ConfigDict(extra="forbid")
    processor: str = Field(min_length=1, description="Name of a registered processor (see GET /processors).")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters shared by every item.")
    parallel_jobs: int = Field(8, ge=1, le=100_000, description="Items of this batch run at once.")
    priority: Priority = Priority.NORMAL
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    max_attempts: int | None = Field(None, ge=1, le=MAX_ATTEMPTS_LIMIT,
                                     description="Default: the processor's retry policy.")
    webhook: Webhook | SkipJsonSchema[None] = Field(
        None, description="Signed POSTs (Standard Webhooks) on the final state, and on progress if asked; "
                          "a plain URL string is accepted too. Default: the server's webhook, if it has one.")
    description: str | None = Field(None, max_length=10_000)
    tags: list[str] = Field(default_factory=list, max_length=100)
    budget: float | None = Field(None, ge=0, description="The most the batch may spend, in the processor's cost "
                                                        "unit: it pauses (pause_reason budget_reached) before it "
                                                        "would spend more; raise it with POST .../budget.")
    start: bool = Field(True, description="Start at once; false leaves the batch pending until POST .../start.")
    dry_run: bool = Field(False, description="Validate only: answer with a ValidationReport, create nothing.")


class BatchCreate(SubmitOptions):
    """POST /batches: items inline, or ``input_uri`` naming a file the server reads."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": ["items"]},
                                                                          {"required": ["input_uri"]}]})
    items: list[Any] | SkipJsonSchema[None] = Field(None, description="The items' payloads (JSON values), in order.")
    input_uri: str | SkipJsonSchema[None] = Field(None, description="A file or URI the server reads the items from.")
    input_format: InputFormatName | None = Field(None, description="Default: from the URI's extension.")

    @model_validator(mode="after")
    def _one_source(self) -> BatchCreate:
        if (self.items is None) == (self.input_uri is None):
            raise ValueError("give exactly one of 'items' or 'input_uri'")
        return self


class EstimateRequest(BatchCreate):
    """POST /batches/estimate: a submission to price. Without ``sample`` nothing is created."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": ["items"]},
                                                                          {"required": ["input_uri"]}]})
    sample: int = Field(0, ge=0, le=10_000, description="Run this many random items for real and extrapolate from "
                                                        "their actual cost and time. The batch is then created "
                                                        "(its id is in the answer) with their results kept.")
    seed: int | None = Field(None, description="Seed of the random sample.")
    start: bool = Field(False, description="With a sample: start the batch once the sample is done; otherwise it "
                                           "stays pending until POST .../start.")


class BudgetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget: float | None = Field(ge=0, description="The new budget, in the batch's cost unit; null removes it.")
    resume: bool = Field(True, description="A batch paused because it reached its old budget runs again (and "
                                           "pauses again at once if not one more item fits the new one).")


class Batch(BatchInfo):
    """A batch: status, counters, progress, throughput, ETA, cost, timings."""

    items: list[ItemInfo] | None = Field(None, description="The first page of items, with include_details=true.")


class BatchList(BaseModel):
    batches: list[BatchInfo]
    next_before: str | None = Field(None, description="Pass as `before` for the next (older) page; null at the end.")


class ItemList(BaseModel):
    items: list[ItemInfo]
    next_after: int | None = Field(None, description="Pass as `after` for the next page; null at the end.")


class Problem(BaseModel):
    """One problem in an input or a request: where it is (line, column) and what is wrong."""

    line: int | None = None
    column: str | None = None
    reason: str
    source: str | None = None


class ValidationReport(BaseModel):
    valid: bool
    processor: str
    items: int = Field(description="Valid items found.")
    problems: list[Problem] = Field(default_factory=list)
    estimated_cost: float | None = None
    cost_unit: str | None = None


class ProcessorInfo(BaseModel):
    name: str
    description: str
    mode: str
    concurrency: int | None = None
    rate_limit: str | None = None
    timeout: float | None = None
    max_attempts: int
    cost_per_item: float
    cost_unit: str
    cost_model: bool = Field(False, description="Items cost different amounts (a function of each item): "
                                                "POST /batches/estimate prices them.")
    params_schema: dict[str, Any] | None = None


class ProcessorList(BaseModel):
    processors: list[ProcessorInfo]


class StoreHealth(BaseModel):
    ok: bool
    error: str | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    store: StoreHealth
    workers: list[WorkerInfo] = Field(default_factory=list, description="Workers registered on the store.")
    workers_alive: int = Field(0, description="Workers that heartbeated within their lease.")
    embedded_workers: int = Field(description="Concurrency of the server's own worker; 0 when API only.")


class RecoverResult(BaseModel):
    recovered: int = Field(description="Workers found dead (no heartbeat within the lease, or process gone).")
    items: int = Field(description="Items those workers held, returned to pending (or failed if lost too often).")
    batches: int = Field(description="Batches those items belong to.")


class DeliveryList(BaseModel):
    deliveries: list[WebhookDelivery]


class Timeline(BaseModel):
    points: list[TimelinePoint] = Field(description="Oldest first, empty buckets included; empty until an item "
                                                    "finished.")


class CleanupRequest(BaseModel):
    days_old: float = Field(ge=0, description="Delete final batches finished longer ago than this.")


class CleanupResult(BaseModel):
    deleted: list[str]
    count: int


class BatchEvent(BaseModel):
    """The data of an SSE event: ``state`` when the status changes, ``progress`` when counters do."""

    type: Literal["state", "progress"]
    batch: BatchInfo


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable: batch_not_found, invalid_transition, invalid_input, ...")
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
