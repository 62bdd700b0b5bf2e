"""benchmarks/gateway.py at a small N, so it does not rot (the full run's figures are in the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway.py"


@pytest.mark.timeout(300)
def test_gateway_benchmark_small() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--n", "200", "--json"], capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["limited_429_caused"] == 0
    assert 0.8 <= figures["limited_ratio"] <= 1.1, figures
    assert figures["free_per_s"] > 0 and figures["bare_per_s"] > 0
