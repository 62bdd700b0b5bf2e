"""The public surface is deliberate: what `batchyard` exports is pinned here."""

from __future__ import annotations

import batchyard

EXPECTED = {
    "ApiError", "AsyncClient", "Batch", "BatchInfo", "BatchSpec", "BatchStatus", "BatchyardError", "Client",
    "ConfigError", "Context", "Engine", "FailurePolicy", "InputError", "InvalidTransition", "Item", "ItemInfo",
    "ItemStatus", "NewItem", "NotFound", "PauseReason", "PermanentError", "Priority", "Processor",
    "ProcessorNotFound", "Resource", "ResourceContext", "RetryAfter", "RetryPolicy", "SchemaVersionError",
    "__version__", "arun", "batch", "cancel", "open_store", "pause", "processor", "resume", "run", "status",
}


def test_all_is_pinned() -> None:
    assert set(batchyard.__all__) == EXPECTED


def test_every_export_exists() -> None:
    for name in batchyard.__all__:
        assert hasattr(batchyard, name), name
