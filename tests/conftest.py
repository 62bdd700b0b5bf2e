"""Shared fixtures: a fresh store per test and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchyard.store.sqlite import SQLiteStore

BIN = Path(sys.executable).parent / "batchyard"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "batchyard.db"


@pytest.fixture
def store(store_path: Path):
    s = SQLiteStore(store_path)
    yield s
    s.close()


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``batchyard`` command and capture its output."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([str(BIN), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, input=input)
