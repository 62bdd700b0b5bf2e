"""Fixtures for the multi-worker tests: a throwaway PostgreSQL schema and a fleet of worker processes.

The PostgreSQL fixtures come from ``tests/pg_fixtures.py``: these tests skip with the reason when no server
can be reached, and fail under CI, which must run them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _fleet import Fleet

from pg_fixtures import pg_admin, pg_database, pg_url  # noqa: F401  (fixtures, found by pytest by name)


@pytest.fixture
def fleet(pg_url: str, tmp_path: Path) -> Iterator[Fleet]:  # noqa: F811  (pg_url: the fixture)
    records = tmp_path / "records"
    records.mkdir()
    f = Fleet(pg_url, records)
    yield f
    for proc in f.procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
