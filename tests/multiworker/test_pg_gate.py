"""Without a PostgreSQL server the PostgreSQL tests skip, saying why; under CI they fail instead.

Runs a PostgreSQL test in a pytest of its own, pointed at a port where nothing listens (needs no server).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2"
TEST = "tests/multiworker/test_postgres_workers.py::test_workers_command_lists_live_workers_here_and_through_a_server"


def _pytest(ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["BATCHYARD_TEST_PG"] = NOWHERE
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", TEST, "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
                           "-rs", "--no-header"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_without_a_server_postgres_tests_skip_with_the_reason() -> None:
    res = _pytest(ci=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 skipped" in res.stdout
    assert "PostgreSQL is not reachable at postgresql://postgres@127.0.0.1:1/postgres" in res.stdout
    assert "run `make pg` or set BATCHYARD_TEST_PG" in res.stdout


def test_under_ci_a_missing_server_fails_the_session() -> None:
    res = _pytest(ci=True)
    assert res.returncode != 0, res.stdout
    assert "skipped" not in res.stdout
    assert "CI runs the PostgreSQL store's tests, but PostgreSQL is not reachable" in res.stdout
