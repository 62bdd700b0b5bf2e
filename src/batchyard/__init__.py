"""batchyard: run a function over every item of a batch, in parallel, with durable per-item state."""

from batchyard.api import Batch, arun, batch, cancel, pause, resume, run, status
from batchyard.core.engine import Engine
from batchyard.core.errors import (
    BatchyardError,
    ConfigError,
    InputError,
    InvalidTransition,
    NotFound,
    PermanentError,
    ProcessorNotFound,
    RetryAfter,
    SchemaVersionError,
)
from batchyard.core.models import BatchInfo, BatchSpec, FailurePolicy, ItemInfo, NewItem, Priority
from batchyard.core.processor import Context, Item, Processor, processor
from batchyard.core.resources import Resource, ResourceContext
from batchyard.core.retry import RetryPolicy
from batchyard.core.states import BatchStatus, ItemStatus, PauseReason
from batchyard.store import open_store

__version__ = "0.1.0"

_LAZY = {"ApiError", "AsyncClient", "Client"}  # the HTTP client (httpx) loads only when asked for


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from batchyard import client

        return getattr(client, name)
    raise AttributeError(f"module 'batchyard' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "AsyncClient",
    "Batch",
    "BatchInfo",
    "BatchSpec",
    "BatchStatus",
    "BatchyardError",
    "Client",
    "ConfigError",
    "Context",
    "Engine",
    "FailurePolicy",
    "InputError",
    "InvalidTransition",
    "Item",
    "ItemInfo",
    "ItemStatus",
    "NewItem",
    "NotFound",
    "PauseReason",
    "PermanentError",
    "Priority",
    "Processor",
    "ProcessorNotFound",
    "Resource",
    "ResourceContext",
    "RetryAfter",
    "RetryPolicy",
    "SchemaVersionError",
    "__version__",
    "arun",
    "batch",
    "cancel",
    "open_store",
    "pause",
    "processor",
    "resume",
    "run",
    "status",
]
