"""Fixtures for acceptance tests: the real ``batchyard`` CLI in subprocesses, on a store per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _support import PROCESSORS_SOURCE, Running

from batchyard.store.sqlite import SQLiteStore


@pytest.fixture
def procs_file(tmp_path: Path) -> Path:
    """The test processors (see ``_support.PROCESSORS_SOURCE``) as a file for ``--processors``."""
    path = tmp_path / "test_processors.py"
    path.write_text(PROCESSORS_SOURCE)
    return path


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """``start_run(*args)`` launches ``batchyard run ARGS`` in the background; killed at teardown."""
    started: list[Running] = []

    def start(*args: Any) -> Running:
        r = Running(["run", *map(str, args)], tmp_path, f"run{len(started)}")
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


@pytest.fixture
def reader(store_path: Path) -> Iterator[Callable[[str], Any]]:
    """``reader(batch_id)`` -> the batch's current BatchInfo, read straight from the store file."""
    stores: list[SQLiteStore] = []

    def read(batch_id: str) -> Any:
        if not stores:
            stores.append(SQLiteStore(store_path))
        return stores[0].get_batch(batch_id)

    yield read
    for s in stores:
        s.close()
