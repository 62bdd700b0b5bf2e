"""The scale-out benchmark runs at a small N in the suite, so it never rots (figures here mean nothing).

It needs PostgreSQL: without a server it skips saying why, and fails under CI (``pg_fixtures``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pg_fixtures import ADMIN_URL, admin_connection

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.timeout(300)
def test_scaleout_benchmark_small() -> None:
    admin_connection().close()  # the same skip-or-fail gate as every PostgreSQL test
    proc = subprocess.run([sys.executable, str(BENCH / "scaleout.py"), "--pg", ADMIN_URL, "--n", "3000",
                           "--sleep-n", "300", "--workers", "1,2", "--idle-warmup", "0.5", "--idle-seconds", "1",
                           "--json"], capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("pg_1_noop_per_s", "pg_2_noop_per_s", "pg_1_sleep_per_s", "pg_2_sleep_per_s", "sqlite_1_noop_per_s",
                "sqlite_1_sleep_per_s", "bare_loop_2proc_per_s", "bare_loop_2proc_chunk100_per_s",
                "threadpool64_per_s"):
        assert figures[key] > 0, key
    assert figures["idle_xacts_per_s"] >= 0 and figures["idle_statements_per_s"] >= 0
    assert figures["noop_pg2_vs_bare"] > 0
    assert "PostgreSQL 2 workers / bare loop" in proc.stdout and "idle fleet: 4 workers" in proc.stdout
