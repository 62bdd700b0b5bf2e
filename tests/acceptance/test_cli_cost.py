"""`batchyard estimate`, `run --budget`, `resume --budget` and `budget`: the real CLI on a store per test."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from _support import cli, log_counts, write_lines

PROCS = textwrap.dedent('''
    import os

    import batchyard


    @batchyard.processor("priced", cost_per_item=lambda item: len(item.payload) * 0.5, cost_unit="EUR")
    def priced(item, ctx):
        fd = os.open(item.params["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{item.id} {item.attempt}\\n".encode())
        finally:
            os.close(fd)
        return {"word": item.payload}
''')


def setup(tmp_path: Path) -> tuple[Path, Path, Path, list[str]]:
    procs = tmp_path / "procs.py"
    procs.write_text(PROCS)
    words = write_lines(tmp_path / "words.txt", ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st"])
    log = tmp_path / "ran.log"
    common = ["--processor", "priced", "--processors", str(procs), "--store", str(tmp_path / "s.db"),
              "--param", f"log={log}"]
    return procs, words, log, common


def test_estimate_by_model_then_by_sample_then_run_skips_the_sample(tmp_path: Path) -> None:
    _, words, log, common = setup(tmp_path)
    res = cli("estimate", words, *common)
    assert res.returncode == 0, res.stderr
    assert "10 items through 'priced'" in res.stdout
    assert "estimated cost 10 EUR (1 EUR per item, from the cost model)" in res.stdout
    assert not log.exists()  # a model estimate runs nothing
    res = cli("estimate", words, *common, "--sample", "3", "--seed", "1", "--json")
    assert res.returncode == 0, res.stderr
    est = json.loads(res.stdout)
    assert (est["method"], est["items"], est["sample"]["size"]) == ("sample", 10, 3)
    assert est["cost_estimated"] == 10.0 and est["cost_model_total"] == 10.0
    assert sum(log_counts(log).values()) == 3
    run = cli("run", words, *common)
    assert run.returncode == 0, run.stderr
    assert f"resuming {est['batch_id']}: 3 of 10 items done" in run.stderr
    assert sorted(log_counts(log).values()) == [1] * 10  # each item ran once: the sample's were kept
    status = json.loads(cli("status", est["batch_id"], "--json", "--store", tmp_path / "s.db").stdout)
    assert (status["cost_total"], status["cost_estimated"], status["cost_projected"]) == (10.0, 10.0, 10.0)


def test_budget_pauses_run_and_resume_with_a_higher_budget_continues(tmp_path: Path) -> None:
    _, words, log, common = setup(tmp_path)
    store = ["--store", str(tmp_path / "s.db")]
    run = cli("run", words, *common, "--budget", "3.5", "--parallel", "2")
    assert run.returncode == 1, run.stderr
    assert "paused (budget_reached)" in run.stdout
    assert "cost 3 EUR spent, estimated 10, projected 10, budget 3.5" in run.stdout
    assert "budget reached: raise it to continue" in run.stdout
    batch_id = json.loads(cli("status", "--json", *store).stdout)["batch_id"]
    assert sum(log_counts(log).values()) == 3
    # running the same command again does not pass the budget either
    again = cli("run", words, *common)
    assert again.returncode == 1 and sum(log_counts(log).values()) == 3
    res = cli("resume", batch_id, "--budget", "6", *store)
    assert res.returncode == 0 and res.stdout.startswith(f"{batch_id} running"), res.stdout + res.stderr
    # the batch runs where the run command runs it: here, by running the same command again
    run = cli("run", words, *common)
    assert run.returncode == 1 and sum(log_counts(log).values()) == 6
    res = cli("budget", batch_id, "--remove", *store)
    assert res.returncode == 0 and res.stdout.startswith(f"{batch_id} running"), res.stdout + res.stderr
    run = cli("run", words, *common)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(log_counts(log).values()) == [1] * 10
