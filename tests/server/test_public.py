"""The client is part of batchyard's public surface."""

from __future__ import annotations

import batchyard
from batchyard import client


def test_client_exports() -> None:
    assert {"Client", "AsyncClient", "ApiError"} <= set(batchyard.__all__)
    assert batchyard.Client is client.Client and batchyard.AsyncClient is client.AsyncClient
    assert issubclass(client.NotFoundError, batchyard.NotFound)  # remote and local lookups fail alike
    assert issubclass(client.ApiError, batchyard.BatchyardError)
    assert sorted(client.__all__) == sorted(name for name in dir(client) if name in client.__all__)
