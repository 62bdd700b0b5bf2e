"""Interrupting ``batchyard run``: kill -9 and rerun, SIGINT, and pause/resume/cancel from another process."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from _support import batch_ids, cli, cli_json, done, load_results, log_counts, wait_for, write_lines

N = 400


def check_every_item_once(out: Path, n: int) -> dict:
    data = load_results(out)
    ids = [r["item_id"] for r in data["results"]]
    assert len(ids) == n, f"{len(ids)} results for {n} items"
    assert len(set(ids)) == n, "an item appears twice in the results"
    assert sorted(int(r["input"]) for r in data["results"]) == list(range(n))
    assert {r["status"] for r in data["results"]} == {"succeeded"}
    assert data["status"] == "completed"
    assert data["summary"]["succeeded"] == n and data["summary"]["items_total"] == n
    return data


def test_kill_9_then_rerun_resumes_and_records_every_item_once(tmp_path, store_path, start_run, reader):
    src = write_lines(tmp_path / "items.txt", range(N))
    out = tmp_path / "results.json"
    args = [src, "--processor", "sleep", "--param", "ms=40", "--parallel", "8", "--store", store_path,
            "--output", out]

    first = start_run(*args)
    batch_id = first.batch_id()
    wait_for(lambda: done(reader(batch_id)) >= 40, timeout=20, what="40 items done")
    first.kill()  # SIGKILL: no cleanup at all
    killed = reader(batch_id)
    assert not killed.is_final and done(killed) < N, "the batch finished before the kill: test is moot"
    assert not out.exists()

    second = cli("run", *args)

    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming {batch_id}" in second.stderr
    check_every_item_once(out, N)
    final = reader(batch_id)
    assert final.status == "completed"
    assert final.items_succeeded == final.items_total == N
    assert final.items_pending == final.items_running == final.items_failed == final.items_cancelled == 0
    assert batch_ids(store_path) == [batch_id]  # resumed, not created anew


def test_rerun_after_kill_9_does_not_redo_finished_items(tmp_path, store_path, start_run, reader, procs_file):
    parallel = 8
    src = write_lines(tmp_path / "items.txt", range(N))
    log = tmp_path / "runs.log"
    out = tmp_path / "results.json"
    args = [src, "-p", "record", "--processors", procs_file, "--param", "ms=40", "--param", f"log={log}",
            "--parallel", str(parallel), "--store", store_path, "-o", out]

    first = start_run(*args)
    batch_id = first.batch_id()
    wait_for(lambda: done(reader(batch_id)) >= 80, timeout=20, what="80 items done")
    first.kill()
    ran_before = sum(log_counts(log).values())
    assert 80 <= ran_before < N

    second = cli("run", *args)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming" in second.stderr
    check_every_item_once(out, N)
    counts = log_counts(log)
    assert set(counts) == {str(i) for i in range(1, N + 1)}, "some items never ran"
    twice = {k: c for k, c in counts.items() if c > 1}
    # Only items in flight (or finished but not yet committed) at the kill may run again.
    assert len(twice) <= parallel + 32, f"{len(twice)} items ran again: {sorted(twice)}"
    assert max(counts.values()) <= 2
    assert sum(1 for c in counts.values() if c == 1) >= N - parallel - 32
    assert sum(counts.values()) < 2 * N


def test_sigint_leaves_a_resumable_batch(tmp_path, store_path, start_run, reader):
    n = 300
    src = write_lines(tmp_path / "items.txt", range(n))
    out = tmp_path / "results.json"
    args = [src, "-p", "sleep", "--param", "ms=40", "--parallel", "4", "--store", store_path, "-o", out]

    first = start_run(*args)
    batch_id = first.batch_id()
    wait_for(lambda: done(reader(batch_id)) >= 20, timeout=20, what="20 items done")
    first.proc.send_signal(signal.SIGINT)

    assert first.wait(timeout=20) == 130, first.stderr
    assert "resumable" in first.stderr or "interrupted" in first.stderr
    info = reader(batch_id)
    assert info.status in ("running", "paused")
    assert info.items_running == 0, "items left leased after a graceful stop"
    assert info.items_pending > 0 and done(info) < n
    assert info.items_failed == info.items_cancelled == 0
    # in-flight items were let finish, not abandoned: every attempt counted has its outcome
    assert info.attempts_total == info.items_succeeded

    second = cli("run", *args)

    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming {batch_id}" in second.stderr
    check_every_item_once(out, n)
    assert batch_ids(store_path) == [batch_id]


def test_pause_and_resume_from_another_process(tmp_path, store_path, start_run, reader):
    n = 400
    src = write_lines(tmp_path / "items.txt", range(n))
    out = tmp_path / "results.json"
    run = start_run(src, "-p", "sleep", "--param", "ms=50", "--parallel", "4", "--store", store_path, "-o", out)
    batch_id = run.batch_id()
    wait_for(lambda: done(reader(batch_id)) >= 8, timeout=20, what="8 items done")

    paused = cli("pause", batch_id, "--store", store_path)

    assert paused.returncode == 0, paused.stderr
    assert "paused" in paused.stdout
    # in-flight items finish, buffered ones go back: nothing runs within about a second
    wait_for(lambda: reader(batch_id).items_running == 0, timeout=2.5, what="no item running after pause")
    frozen = done(reader(batch_id))
    time.sleep(1.0)
    assert done(reader(batch_id)) == frozen, "items still completing after pause"
    assert frozen < n
    st = cli_json("status", batch_id, "--json", "--store", store_path)
    assert st["status"] == "paused"
    assert st["pause_reason"] == "user"
    assert st["items_running"] == 0 and st["items_pending"] == n - frozen
    assert run.proc.poll() is None, "the run must wait while paused, not exit"

    resumed = cli("resume", batch_id, "--store", store_path)

    assert resumed.returncode == 0, resumed.stderr
    assert "running" in resumed.stdout
    wait_for(lambda: done(reader(batch_id)) > frozen, timeout=10, what="progress after resume")
    assert run.wait(timeout=30) == 0, run.stderr
    check_every_item_once(out, n)


def test_cancel_from_another_process(tmp_path, store_path, start_run, reader):
    n = 400
    src = write_lines(tmp_path / "items.txt", range(n))
    out = tmp_path / "results.json"
    run = start_run(src, "-p", "sleep", "--param", "ms=50", "--parallel", "4", "--store", store_path, "-o", out)
    batch_id = run.batch_id()
    wait_for(lambda: done(reader(batch_id)) >= 8, timeout=20, what="8 items done")

    res = cli("cancel", batch_id, "--store", store_path)

    assert res.returncode == 0, res.stderr
    assert run.wait(timeout=20) == 1, run.stderr
    info = reader(batch_id)
    assert info.status == "cancelled"
    assert info.items_pending == 0 and info.items_running == 0
    assert info.items_cancelled > 0
    assert info.items_succeeded + info.items_failed + info.items_cancelled == n
    data = load_results(out)
    assert data["status"] == "cancelled"
    statuses = [r["status"] for r in data["results"]]
    assert len(statuses) == n
    assert statuses.count("cancelled") == info.items_cancelled
    assert set(statuses) <= {"succeeded", "cancelled"}

    # control commands on a finished batch are refused; unknown ids are usage errors
    again = cli("resume", batch_id, "--store", store_path)
    assert again.returncode == 1 and "cannot" in again.stderr
    assert cli("pause", "batch_nope", "--store", store_path).returncode == 2
