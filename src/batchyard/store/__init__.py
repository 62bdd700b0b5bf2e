"""Store implementations, chosen by URL."""

from __future__ import annotations

import os
from pathlib import Path

from batchyard.core import defaults
from batchyard.core.errors import ConfigError
from batchyard.core.store import Store


def default_url() -> str:
    return os.environ.get("BATCHYARD_STORE") or str(Path(defaults.STORE_DIR) / defaults.STORE_FILE)


def open_store(url: str | None = None) -> Store:
    """Open a store: a file path or ``sqlite:///path`` (the default ``./.batchyard/batchyard.db``)."""
    url = url or default_url()
    if url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("the PostgreSQL store is not available in this version")
    if "://" in url and not url.startswith("sqlite:"):
        raise ConfigError(f"unknown store URL {url!r}: expected a file path or sqlite:///PATH")
    from batchyard.store.sqlite import open_sqlite

    return open_sqlite(url)
