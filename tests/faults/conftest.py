"""Fixtures of the fault tests: a store of either kind, the hostile processors, short leases.

``store_url`` is parametrised over both stores where the guarantee is the store's: SQLite in a fresh file,
PostgreSQL in a fresh schema of a throwaway database (``tests/pg_fixtures.py``: skipped with the reason when
no server answers, failed under CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _faults_support import write_processors

from batchyard.core.store import Store
from batchyard.store import open_store
from pg_fixtures import pg_admin, pg_database, pg_url  # noqa: F401  (fixtures, found by pytest by name)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store" / "batchyard.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The test's own handle on the store (the workers under test are other processes)."""
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def procs(tmp_path: Path) -> Path:
    return write_processors(tmp_path)
