"""Every benchmark runs at a small N in the suite, so none of them rots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.timeout(300)
def test_throughput_benchmark_small() -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "throughput.py"), "--n", "3000", "--sleep-n", "300",
                           "--repeat", "1", "--json"], capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("a_batchyard_run_per_s", "a_threadpool8_per_s", "a_bare_durable_loop_per_s", "b_engine_per_s",
                "b_batchyard_run_per_s", "b_threadpool64_per_s"):
        assert figures[key] > 0, key
    assert figures["a_peak_rss_mb"] < 300


@pytest.mark.timeout(300)
def test_load_benchmark_small() -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "load.py"), "--n", "2000", "--clients", "10", "--ramp", "50,100",
                           "--step-s", "1", "--ramp-items", "3000", "--json"], capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["requests"] > 0 and figures["errors"] == 0, figures
    assert figures["alone_items_per_s"] > 0 and figures["throughput_ratio"] > 0
    assert [s["target_per_s"] for s in figures["ramp"]][:1] == [50]
