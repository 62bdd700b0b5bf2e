"""OpenAI's object shapes for files, batches and errors, as the ``openai`` package reads them.

Field names and meanings follow OpenAI's Batch API; ``BatchObject.batchyard`` adds what OpenAI's object has
no field for (the batchyard status behind the mapped one, the upstream's current limits and throttling
events, the cost against the synchronous price). Clients that do not know it ignore it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Endpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
ENDPOINTS: tuple[str, ...] = Endpoint.__args__  # type: ignore[attr-defined]
BatchStatusName = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                          "cancelled"]
FilePurpose = Literal["batch", "batch_output", "assistants", "fine-tune", "vision", "user_data", "evals"]


class OpenAIError(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: OpenAIError


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchCreate(BaseModel):
    input_file_id: str
    endpoint: Endpoint
    completion_window: str = Field("24h", description="24h as OpenAI has it; this gateway also takes any "
                                                      "NUMBER followed by s, m, h or d.")
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        # OpenAI's limits on metadata: 16 pairs, keys up to 64 characters, values up to 512.
        if v is None:
            return v
        if len(v) > 16:
            raise ValueError("metadata: at most 16 key-value pairs")
        for key, value in v.items():
            if len(key) > 64 or len(value) > 512:
                raise ValueError(f"metadata {key[:64]!r}: keys up to 64 characters, values up to 512")
        return v


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchErrorData(BaseModel):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchErrorData]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatusName
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None
    model: str | None = None
    usage: Usage | None = None
    batchyard: dict[str, Any] = Field(default_factory=dict, description="batchyard's own view of the batch: its "
                                      "status, the upstream's limits and throttling events, the cost.")


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
