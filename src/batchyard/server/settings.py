"""The server's configuration: one typed object, from ``BATCHYARD_*`` environment variables or the CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from batchyard.core import defaults

DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHYARD_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    store: str | None = Field(None, description="Store path or URL (default ./.batchyard/batchyard.db).")
    processors: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Modules or .py files registering processors. In BATCHYARD_PROCESSORS, "
                                          "separated like PATH.")
    mounts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Adapters to mount (see server.mounts): modules or .py files with a "
                                          "module-level `router`. In BATCHYARD_MOUNTS, separated like PATH.")
    workers: int = Field(defaults.PARALLEL, ge=0, description="Concurrency of the embedded worker; 0 = API only.")
    retention_days: float | None = Field(None, ge=0, description="Delete final batches older than this.")
    retention_interval_s: float = Field(3600.0, gt=0)
    allow_unsafe_processors: bool = False
    allow_private_network: bool = Field(False, description="Fetch URLs on loopback, private, link-local and "
                                                           "metadata addresses (the SSRF guard refuses them).")
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Directories whose files clients may name (input_uri, path columns); "
                                          "none: no local files. In BATCHYARD_DATA_ROOTS, separated like PATH.")
    max_upload_bytes: int = Field(DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="Largest request body (413 beyond).")
    events_interval_s: float = Field(0.25, gt=0, description="How often SSE streams poll a batch.")
    events_ping_s: float = Field(15.0, gt=0)
    lease_seconds: float = defaults.LEASE_SECONDS
    grace_seconds: float = defaults.GRACE_SECONDS
    tenant: str = "default"

    # Access: keys from the environment (``key`` or ``tenant:key``, comma-separated) and from the store.
    api_keys: str | None = Field(None, description="API keys, comma-separated, each `key` (tenant default) or "
                                                   "`tenant:key`; `batchyard keys create` adds more to the store.")
    tenant_max_queued: int | None = Field(None, ge=1, description="Most items one tenant may have waiting; "
                                                                 "submissions beyond it get 429.")
    tenant_max_running: int | None = Field(None, ge=1, description="Most items one tenant may have running.")
    retry_after_s: int = Field(30, ge=1, description="Retry-After sent with 429.")

    # Webhooks
    webhook_secret: str | None = Field(None, description="Standard Webhooks signing secret (whsec_...); "
                                                         "default: one generated and kept in the store.")
    webhook_url: str | None = Field(None, description="Webhook for batches submitted without one.")
    webhook_max_attempts: int = Field(defaults.WEBHOOK_MAX_ATTEMPTS, ge=1, le=100)
    webhook_backoff_s: float = Field(defaults.WEBHOOK_BACKOFF_SECONDS, gt=0)
    webhook_timeout_s: float = Field(defaults.WEBHOOK_TIMEOUT_SECONDS, gt=0)
    webhook_progress_s: float = Field(defaults.WEBHOOK_PROGRESS_SECONDS, gt=0)

    # The OpenAI-compatible batch gateway (batchyard.gateway): on under /v1 when the server has an upstream.
    upstream: str | None = Field(None, description="Base URL of an OpenAI-compatible API (http://host:8080/v1); "
                                                   "enables /v1/files and /v1/batches.")
    upstream_key_env: str = Field("BATCHYARD_UPSTREAM_KEY", description="Environment variable holding the "
                                                                        "upstream's API key (never stored).")
    upstream_rpm: float | None = Field(None, gt=0, description="Requests per minute per upstream key.")
    upstream_tpm: float | None = Field(None, gt=0, description="Tokens per minute per upstream key.")
    upstream_concurrency: int = Field(64, ge=1, description="Requests in flight at once, across all workers.")
    upstream_routes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Per-model upstreams, MODEL=URL or MODEL=URL@KEY_ENV (a trailing * "
                                          "makes MODEL a prefix). In BATCHYARD_UPSTREAM_ROUTES, space-separated.")
    upstream_timeout_s: float = Field(600.0, gt=0, description="Timeout of one upstream request.")
    upstream_recovery_s: float = Field(10.0, gt=0, description="After the upstream stops refusing (429/503), "
                                                                "seconds for the rate to grow from half back to full.")
    prices: Path | None = Field(None, description="JSON price table (model -> input, output per 1M tokens, "
                                                  "batch_discount) added to the built-in one.")
    gateway_max_file_bytes: int = Field(200 * 1024 * 1024, ge=1, description="Largest batch input file.")
    gateway_max_lines: int = Field(50_000, ge=1, description="Most requests in one batch input file.")

    @field_validator("upstream_routes", mode="before")
    @classmethod
    def _split_routes(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else value

    @field_validator("data_roots", "processors", "mounts", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        # From the environment: "/srv/a:/srv/b" (like PATH), not JSON
        return [part for part in value.split(os.pathsep) if part] if isinstance(value, str) else value
