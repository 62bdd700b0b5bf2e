"""Cost over REST: budgets on submission, POST /batches/{id}/budget, POST /batches/estimate, and the client."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from _serve_support import Server

from batchyard import Client

PROCS = textwrap.dedent('''
    import batchyard


    @batchyard.processor("per-letter", cost_per_item=lambda item: len(item.payload) * 0.25, cost_unit="USD")
    def per_letter(item, ctx):
        return {"word": item.payload}


    @batchyard.processor("metered", cost_unit="tokens")
    def metered(item, ctx):
        ctx.report_cost(10)
        return {"word": item.payload}
''')
WORDS = ["aaaa", "bbbb", "cc", "dd", "eeee", "ff", "gggg", "hh"]  # 4 + 4 + 2 + 2 + 4 + 2 + 4 + 2 = 24 letters


def test_budget_pause_raise_and_estimates(tmp_path: Path, start_server: Callable[..., Server]) -> None:
    procs = tmp_path / "cost_procs.py"
    procs.write_text(PROCS)
    server = start_server("--processors", str(procs), "--workers", "2")
    with Client(server.url, timeout=30) as c:
        est = c.estimate("per-letter", WORDS)
        assert (est.method, est.items, est.cost_estimated, est.cost_unit, est.batch_id) == ("model", 8, 6.0, "USD",
                                                                                           None)
        assert c.list_batches().batches == []  # nothing created
        assert c.validate("per-letter", WORDS).estimated_cost == 6.0

        b = c.create_batch("per-letter", WORDS, budget=2.0, parallel_jobs=1)
        assert (b.budget, b.cost_estimated) == (2.0, 6.0)
        paused = c.wait(b.batch_id, timeout=20)  # wait ends at a budget pause: nobody else raises it
        assert (paused.status, paused.pause_reason) == ("paused", "budget_reached")
        assert paused.cost_total <= 2.0 and paused.items_pending > 0
        assert c.get_batch(b.batch_id).pause_reason == "budget_reached"

        raised = c.set_budget(b.batch_id, 100.0)
        assert raised.status == "running" and raised.budget == 100.0
        end = c.wait(b.batch_id, timeout=20)
        assert (end.status, end.cost_total, end.cost_projected) == ("completed", 6.0, 6.0)

        sampled = c.estimate("metered", WORDS, sample=3, seed=2)
        assert (sampled.method, sampled.sample.size, sampled.cost_estimated) == ("sample", 3, 80.0)
        kept = c.get_batch(sampled.batch_id)
        assert (kept.status, kept.items_succeeded, kept.cost_total) == ("pending", 3, 30.0)
        c.start(sampled.batch_id)
        done = c.wait(sampled.batch_id, timeout=20)
        assert (done.status, done.attempts_total, done.cost_total) == ("completed", 8, 80.0)
