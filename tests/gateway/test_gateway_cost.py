"""Cost: each batch's cost at the batch price and what the same requests would have cost synchronously."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _gateway_support import chat_lines, client, jsonl, upload, wait_status
from _serve_support import Server

from batchyard import Client
from batchyard.gateway.pricing import PriceTable


def test_price_table_prefixes_and_overrides(tmp_path: Path) -> None:
    table = PriceTable()
    mini, full = table.get("gpt-4o-mini-2024-07-18"), table.get("gpt-4o-2024-08-06")
    assert mini is not None and full is not None and (mini.input, full.input) == (0.15, 2.5)  # longest prefix
    assert table.get("llama-3-8b") is None
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"llama-3-8b": {"input": 0.05, "output": 0.1, "batch_discount": 0.4}}))
    own = PriceTable.load(path).get("llama-3-8b")
    assert own is not None and own.batch_cost(1_000_000, 1_000_000) == pytest.approx(0.06)
    assert own.sync_cost(1_000_000, 1_000_000) == pytest.approx(0.15)


def test_batch_cost_and_the_synchronous_comparison(start_gateway: Callable[..., Server], tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"house-model": {"input": 1.0, "output": 2.0, "batch_discount": 0.5}}))
    s = start_gateway("--prices", str(prices))
    c = client(s)
    data = chat_lines(10, model="gpt-4o-mini") + chat_lines(5, prefix="own", model="house-model") + \
        chat_lines(3, prefix="free", model="unpriced")
    done = wait_status(c, c.batches.create(input_file_id=upload(c, data).id, endpoint="/v1/chat/completions",
                                           completion_window="24h").id)
    assert done.status == "completed"
    want_batch = want_sync = 0.0
    for line in jsonl(c, done.output_file_id):
        usage = line["response"]["body"]["usage"]
        per_million = {"gpt-4o-mini": (0.15, 0.60), "house-model": (1.0, 2.0)}.get(
            line["response"]["body"]["model"], (0.0, 0.0))
        sync = (usage["prompt_tokens"] * per_million[0] + usage["completion_tokens"] * per_million[1]) / 1e6
        want_sync += sync
        want_batch += sync * 0.5
    cost = done.batchyard["cost"]
    assert cost["unit"] == "USD" and want_batch > 0
    assert cost["batch"] == pytest.approx(want_batch, rel=1e-6)
    assert cost["synchronous"] == pytest.approx(want_sync, rel=1e-6)
    assert cost["saved"] == pytest.approx(want_sync - want_batch, rel=1e-6)
    with Client(s.url) as bc:  # the same cost on every surface
        assert bc.get_batch(done.id).cost_total == pytest.approx(want_batch, rel=1e-6)
