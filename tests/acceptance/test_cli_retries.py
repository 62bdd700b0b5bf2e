"""Retries, ``--retry-failed``, ``--new``, timeouts and failure policies through ``batchyard run``."""

from __future__ import annotations

import time

import pytest
from _support import batch_ids, cli, load_results, log_counts, write_lines


def test_transient_failures_are_retried_until_success(tmp_path, store_path, procs_file):
    src = write_lines(tmp_path / "items.txt", range(6))
    log = tmp_path / "runs.log"
    out = tmp_path / "r.json"

    res = cli("run", src, "-p", "flaky", "--processors", procs_file, "--param", f"log={log}",
              "--store", store_path, "-o", out)

    assert res.returncode == 0, res.stdout + res.stderr
    data = load_results(out)
    assert data["summary"]["succeeded"] == 6 and data["summary"]["failed"] == 0
    assert data["summary"]["attempts"] == 18
    for r in data["results"]:
        assert r["status"] == "succeeded"
        assert r["attempts"] == 3
        assert r["result"] == {"attempt": 3}
        assert r["error"] is None  # "result or error": earlier attempts' errors are not the outcome
    assert log_counts(log) == {str(i): 3 for i in range(1, 7)}


def test_retry_failed_reruns_only_failed_items(tmp_path, store_path, procs_file):
    src = write_lines(tmp_path / "items.txt", range(1, 10))
    log = tmp_path / "runs.log"
    flag = tmp_path / "flag"
    flag.touch()
    out = tmp_path / "r.json"
    args = [src, "-p", "flag-fail", "--processors", procs_file, "--param", f"log={log}", "--param", f"flag={flag}",
            "--store", store_path, "-o", out]

    first = cli("run", *args)
    assert first.returncode == 1
    data = load_results(out)
    batch_id = data["batch_id"]
    assert sorted(r["input"] for r in data["results"] if r["status"] == "failed") == ["3", "6", "9"]

    # The same command again: the batch is finished; nothing runs again.
    again = cli("run", *args)
    assert again.returncode == 1
    assert "already finished" in again.stderr
    assert sum(log_counts(log).values()) == 9

    flag.unlink()
    retried = cli("run", *args, "--retry-failed")

    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert batch_id in retried.stderr
    data = load_results(out)
    assert data["batch_id"] == batch_id and data["status"] == "completed"
    assert data["summary"]["succeeded"] == 9 and data["summary"]["failed"] == 0
    assert {r["status"] for r in data["results"]} == {"succeeded"}
    counts = log_counts(log)
    assert {k for k, c in counts.items() if c == 2} == {"3", "6", "9"}
    assert {k for k, c in counts.items() if c == 1} == {"1", "2", "4", "5", "7", "8"}
    assert batch_ids(store_path) == [batch_id]


def test_new_starts_a_new_batch(tmp_path, store_path):
    src = write_lines(tmp_path / "items.txt", ["a", "b", "c"])
    first = cli("run", src, "-p", "noop", "--store", store_path)
    second = cli("run", src, "-p", "noop", "--store", store_path, "--new")
    assert first.returncode == 0 and second.returncode == 0
    assert "created" in second.stderr
    ids = batch_ids(store_path)
    assert len(ids) == 2 and ids[0] != ids[1]


def test_timeout_fails_items_with_timeout_error(tmp_path, store_path, procs_file):
    src = write_lines(tmp_path / "items.txt", range(4))
    out = tmp_path / "r.json"
    started = time.monotonic()

    res = cli("run", src, "-p", "too-slow", "--processors", procs_file, "--parallel", "4",
              "--store", store_path, "-o", out)

    elapsed = time.monotonic() - started
    assert res.returncode == 1, res.stdout + res.stderr
    # two attempts of a 5 s sleep each would take 10 s: the timeout (0.3 s) cut them short
    assert elapsed < 8, f"took {elapsed:.1f}s"
    data = load_results(out)
    assert data["summary"]["failed"] == 4
    for r in data["results"]:
        assert r["status"] == "failed"
        assert r["error"]["type"] == "TimeoutError"
        assert r["attempts"] == 2  # the processor's retry policy: timeouts are retried
        assert r["result"] is None




@pytest.mark.parametrize("policy", [["--max-failures", "3"], ["--max-failure-rate", "0.2"]],
                         ids=["max-failures", "max-failure-rate"])
def test_failure_policy_fails_the_batch_and_cancels_the_rest(policy, tmp_path, start_run, store_path, reader,
                                                             procs_file):
    n = 60
    src = write_lines(tmp_path / "items.txt", range(n))
    out = tmp_path / "r.json"
    # Items 0-9 succeed at once (so the worker buffers the rest), every later one fails after 100 ms.
    run = start_run(src, "-p", "ok-then-fail", "--processors", procs_file, "--param", "ok=10",
                    "--param", "ms=100", "--parallel", "2", *policy, "--store", store_path, "-o", out)
    batch_id = run.batch_id()

    assert run.wait(timeout=8) == 1, run.stderr

    info = reader(batch_id)
    assert info.status == "failed"
    assert info.items_pending == info.items_running == 0
    assert info.items_succeeded == 10
    assert info.items_failed > (3 if policy[0] == "--max-failures" else 0.2 * n)
    assert info.items_cancelled > 0
    assert info.items_succeeded + info.items_failed + info.items_cancelled == n
    assert ("max_failures" if policy[0] == "--max-failures" else "max_failure_rate") in (info.status_reason or "")
    data = load_results(out)
    assert data["status"] == "failed"
    assert [r["status"] for r in data["results"]].count("cancelled") == info.items_cancelled


def test_failure_rate_below_the_limit_does_not_stop_the_batch(tmp_path, store_path, procs_file):
    src = write_lines(tmp_path / "items.txt", range(1, 21))
    out = tmp_path / "r.json"
    res = cli("run", src, "-p", "fail-even", "--processors", procs_file, "--max-failure-rate", "0.6",
              "--max-failures", "15", "--store", store_path, "-o", out)
    assert res.returncode == 1  # items failed, so exit 1, but the batch completed
    data = load_results(out)
    assert data["status"] == "completed"
    assert data["summary"]["failed"] == 10 and data["summary"]["succeeded"] == 10
    assert data["summary"]["cancelled"] == 0
