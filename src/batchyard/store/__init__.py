"""Store implementations, chosen by URL."""

from __future__ import annotations

import os
import re
from pathlib import Path

from batchyard.core import defaults
from batchyard.core.errors import ConfigError
from batchyard.core.store import Store

PG_SCHEMES = ("postgresql://", "postgres://")
# A password in a URL: after the user name (``user:secret@``) or as a parameter (``?password=secret``).
_USERINFO_PASSWORD = re.compile(r"(://[^:/@?#]*):[^@/?#]*@")
_PARAM_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def safe_url(url: str) -> str:
    """A store URL fit to print or log: any password replaced by ``***``."""
    return _PARAM_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", url))


def default_url() -> str:
    return os.environ.get("BATCHYARD_STORE") or str(Path(defaults.STORE_DIR) / defaults.STORE_FILE)


def open_store(url: str | None = None) -> Store:
    """Open a store: a file path or ``sqlite:///path`` (the default ``./.batchyard/batchyard.db``), or
    ``postgresql://user@host/db`` for several machines on one database."""
    url = url or default_url()
    if url.startswith(PG_SCHEMES):
        from batchyard.store.postgres import open_postgres

        return open_postgres(url)
    if "://" in url and not url.startswith("sqlite:"):
        raise ConfigError(f"unknown store URL {url!r}: expected a file path, sqlite:///PATH or postgresql://...")
    from batchyard.store.sqlite import open_sqlite

    return open_sqlite(url)


def upgrade_store(url: str | None = None) -> tuple[int, int]:
    """Migrate a store's schema to the latest version: (version before, version after).

    SQLite stores migrate whenever they are opened; PostgreSQL stores, shared by many machines, only
    here (or when the database is empty), so that an upgrade is a deliberate step.
    """
    url = url or default_url()
    if url.startswith(PG_SCHEMES):
        from batchyard.store.postgres import upgrade_postgres

        return upgrade_postgres(url)
    store = open_store(url)
    try:
        version: int = store.schema_version()  # type: ignore[attr-defined]
    finally:
        store.close()
    return version, version
