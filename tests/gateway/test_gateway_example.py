"""examples/fashion_descriptions (seed 002) end to end: the catalogue, the mock upstream, a real gateway, the
script with the openai package, the descriptions CSV and the cost table."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from _serve_support import Server

from batchyard.gateway.mock_upstream import MockUpstream

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fashion_descriptions"


def test_describe_products_through_the_gateway(start_gateway: Callable[..., Server], upstream: MockUpstream,
                                               tmp_path: Path) -> None:
    upstream.behaviour.latency_ms = 20
    products = tmp_path / "products.csv"
    subprocess.run([sys.executable, str(EXAMPLE / "make_products.py"), "--count", "40", "--images", "data",
                    "--out", str(products)], check=True, capture_output=True, timeout=60)
    s = start_gateway("--upstream-rpm", "6000")
    out = tmp_path / "descriptions.csv"
    run = subprocess.run([sys.executable, str(EXAMPLE / "describe.py"), str(products), "--base-url", s.url + "/v1",
                          "--poll", "0.2", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr + run.stdout
    with products.open() as fh:
        catalogue = list(csv.DictReader(fh))
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [p["id"] for p in catalogue]
    for p, r in zip(catalogue, rows, strict=True):
        assert p["title"] in r["description"] and r["error"] == ""
        assert int(r["input_tokens"]) > 85 and int(r["output_tokens"]) > 0  # the image part counts 85
    assert "completed" in run.stdout and "40 described, 0 failed" in run.stdout
    assert "| Batch API |" in run.stdout and "50.0%" in run.stdout
    assert "batchyard: cost" in run.stdout
