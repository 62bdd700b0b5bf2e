"""``batchyard run`` end to end in subprocesses: inputs, outputs, progress, exit codes, other commands."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
from pathlib import Path

import pytest
from _support import batch_ids, cli, cli_json, load_results, wait_for, write_lines

import batchyard
from batchyard import BatchSpec, Engine, open_store

RESULT_KEYS = {"item_id", "status", "input", "result", "error", "attempts", "duration_s"}
SUMMARY_KEYS = {"items_total", "succeeded", "failed", "cancelled", "success_rate", "processing_time_s", "attempts"}
STATUS_KEYS = {"batch_id", "status", "processor", "items_total", "items_pending", "items_running",
               "items_succeeded", "items_failed", "items_cancelled", "progress_percent", "created_at",
               "started_at", "completed_at", "estimated_completion", "throughput_per_s"}


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def csv_value(cell: str) -> str:
    """A text input as a CSV cell: written as is, or JSON-quoted."""
    if cell.startswith('"'):
        return json.loads(cell)
    return cell


# -- inputs and the JSON output ---------------------------------------------------------------------


def test_run_text_file_writes_json_results(tmp_path: Path, store_path: Path) -> None:
    src = tmp_path / "items.txt"
    src.write_text("alpha\n\n  beta  \ngamma\n\n")
    out = tmp_path / "results.json"

    res = cli("run", src, "--processor", "noop", "--store", store_path, "--output", out)

    assert res.returncode == 0, res.stderr
    data = load_results(out)
    assert data["batch_id"].startswith("batch_")
    assert data["status"] == "completed"
    summary = data["summary"]
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["items_total"] == 3
    assert summary["succeeded"] == 3 and summary["failed"] == 0 and summary["cancelled"] == 0
    assert summary["success_rate"] == 1.0
    assert summary["attempts"] == 3
    assert summary["processing_time_s"] >= 0
    results = data["results"]
    assert [r["input"] for r in results] == ["alpha", "beta", "gamma"]  # blank lines skipped, stripped
    assert len({r["item_id"] for r in results}) == 3
    for r in results:
        assert r.keys() >= RESULT_KEYS
        assert r["status"] == "succeeded"
        assert r["error"] is None
        assert r["attempts"] == 1
        assert r["duration_s"] is not None and r["duration_s"] >= 0
        assert r["input"] in json.dumps(r["result"])  # noop returns its payload
    # the store agrees with the file
    status = cli_json("status", data["batch_id"], "--json", "--store", store_path)
    assert status["status"] == "completed" and status["items_succeeded"] == 3


def test_run_json_array(tmp_path: Path, store_path: Path) -> None:
    payloads = [{"name": "a", "n": 1}, [1, 2], "text", 3.5, True]
    src = tmp_path / "items.json"
    src.write_text(json.dumps(payloads))
    out = tmp_path / "results.json"

    res = cli("run", src, "-p", "noop", "--store", store_path, "-o", out)

    assert res.returncode == 0, res.stderr
    data = load_results(out)
    assert data["summary"]["items_total"] == 5
    assert [r["input"] for r in data["results"]] == payloads
    assert data["results"][0]["result"] == {"name": "a", "n": 1}
    assert all(r["status"] == "succeeded" for r in data["results"])


def test_run_stdin(tmp_path: Path, store_path: Path) -> None:
    out = tmp_path / "results.json"
    res = cli("run", "-", "-p", "noop", "--store", store_path, "-o", out, input="one\ntwo\n\nthree\n")
    assert res.returncode == 0, res.stderr
    data = load_results(out)
    assert [r["input"] for r in data["results"]] == ["one", "two", "three"]


def test_stdin_spool_file_is_removed(tmp_path: Path, store_path: Path) -> None:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    res = cli("run", "-", "-p", "noop", "--store", store_path, input="a\nb\n", env={"TMPDIR": str(tmpdir)})
    assert res.returncode == 0, res.stderr
    assert list(tmpdir.iterdir()) == []


def test_stdin_rerun_resumes_the_same_batch(store_path: Path) -> None:
    first = cli("run", "-", "-p", "noop", "--store", store_path, input="x\ny\n")
    second = cli("run", "-", "-p", "noop", "--store", store_path, input="x\ny\n")
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert len(batch_ids(store_path)) == 1
    assert "already finished" in second.stderr


def test_csv_and_jsonl_outputs(tmp_path: Path, store_path: Path) -> None:
    src = write_lines(tmp_path / "items.txt", ["a", "b", "c", "d"])
    csv_out, jsonl_out = tmp_path / "r.csv", tmp_path / "r.jsonl"

    assert cli("run", src, "-p", "noop", "--store", store_path, "-o", csv_out).returncode == 0
    rows = read_csv(csv_out)
    assert len(rows) == 4
    assert rows[0].keys() >= {"item_id", "status", "input", "attempts", "duration_s"}
    assert any(k.startswith("result") for k in rows[0])
    assert any(k.startswith("error") for k in rows[0])
    assert [csv_value(r["input"]) for r in rows] == ["a", "b", "c", "d"]
    assert {r["status"] for r in rows} == {"succeeded"}
    assert {r["attempts"] for r in rows} == {"1"}

    # Same input and processor: the rerun finds the finished batch and only writes its results again.
    res = cli("run", src, "-p", "noop", "--store", store_path, "-o", jsonl_out)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in jsonl_out.read_text().splitlines() if line.strip()]
    assert len(records) == 4
    assert all(r.keys() >= RESULT_KEYS for r in records)
    assert [r["input"] for r in records] == ["a", "b", "c", "d"]
    assert len(batch_ids(store_path)) == 1


def test_format_option_overrides_extension(tmp_path: Path, store_path: Path) -> None:
    src = write_lines(tmp_path / "items.txt", ["a", "b"])
    out = tmp_path / "results.out"
    assert cli("run", src, "-p", "noop", "--store", store_path, "-o", out, "--format", "jsonl").returncode == 0
    assert len(out.read_text().splitlines()) == 2


def test_bad_output_format_is_rejected_before_running(tmp_path: Path, store_path: Path) -> None:
    src = write_lines(tmp_path / "items.txt", ["a", "b"])
    bad = cli("run", src, "-p", "noop", "--store", store_path, "-o", tmp_path / "r.out", "--format", "xml")
    assert bad.returncode == 2
    assert "xml" in bad.stderr
    assert batch_ids(store_path) == []


def test_plain_progress_lines_when_stderr_is_not_a_tty(tmp_path: Path, store_path: Path) -> None:
    src = write_lines(tmp_path / "items.txt", range(30))
    res = cli("run", src, "-p", "sleep", "--param", "ms=5", "--store", store_path)
    assert res.returncode == 0, res.stderr
    assert "\x1b[" not in res.stderr  # no escape codes
    assert "\r" not in res.stderr  # no redrawn bar
    batch_id = batch_ids(store_path)[0]
    assert re.search(rf"created {batch_id}: 30 items", res.stderr)
    assert re.search(rf"^{batch_id} completed 30/30 \(100\.0%\) ok=30 failed=0", res.stderr, re.M), res.stderr
    # the summary goes to stdout
    assert batch_id in res.stdout and "completed" in res.stdout and "30 succeeded" in res.stdout


# -- exit codes -----------------------------------------------------------------------------------


def test_exit_1_when_some_items_fail(tmp_path: Path, store_path: Path, procs_file: Path) -> None:
    src = write_lines(tmp_path / "n.txt", range(1, 11))
    out = tmp_path / "r.json"
    res = cli("run", src, "-p", "fail-even", "--processors", procs_file, "--store", store_path, "-o", out)
    assert res.returncode == 1, res.stderr
    data = load_results(out)
    assert data["status"] == "completed"
    assert data["summary"]["succeeded"] == 5 and data["summary"]["failed"] == 5
    assert data["summary"]["success_rate"] == 0.5
    for r in data["results"]:
        if int(r["input"]) % 2 == 0:
            assert r["status"] == "failed"
            assert r["error"]["type"] == "PermanentError" and r["input"] in r["error"]["message"]
            assert r["attempts"] == 1  # a permanent error is not retried
            assert r["result"] is None
        else:
            assert r["status"] == "succeeded" and r["result"] == {"n": int(r["input"])}


@pytest.mark.parametrize("case", ["missing-file", "unknown-processor", "bad-param-value", "param-without-equals",
                                  "missing-processors-file", "bad-json"])
def test_exit_2_for_usage_and_input_errors(case: str, tmp_path: Path, store_path: Path) -> None:
    src = write_lines(tmp_path / "items.txt", ["a", "b"])
    args: list[object] = [src, "-p", "noop"]
    if case == "missing-file":
        args = [tmp_path / "nope.txt", "-p", "noop"]
    elif case == "unknown-processor":
        args = [src, "-p", "no-such-processor"]
    elif case == "bad-param-value":
        args = [src, "-p", "sleep", "--param", "ms=-5"]
    elif case == "param-without-equals":
        args = [src, "-p", "sleep", "--param", "ms"]
    elif case == "missing-processors-file":
        args = [src, "-p", "noop", "--processors", tmp_path / "missing_procs.py"]
    elif case == "bad-json":
        bad = tmp_path / "bad.json"
        bad.write_text('[1, 2,\n "x" oops]')
        args = [bad, "-p", "noop"]

    res = cli("run", *args, "--store", store_path)

    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "error" in res.stderr.lower()
    assert "Traceback" not in res.stderr
    if case == "unknown-processor":
        assert "no-such-processor" in res.stderr
    assert batch_ids(store_path) == []  # nothing half-created


def test_invalid_line_creates_no_batch(tmp_path: Path, store_path: Path) -> None:
    src = tmp_path / "items.txt"
    src.write_bytes(b"good\nalso good\n\xff\xfe bad\nfine\n")
    res = cli("run", src, "-p", "noop", "--store", store_path)
    assert res.returncode == 2
    assert "line 3" in res.stderr
    assert batch_ids(store_path) == []


# -- other commands -------------------------------------------------------------------------------


def make_batches(store_path: Path) -> tuple[str, str]:
    """Two finished batches (3 and 2 items), made in-process: these tests are about the commands that read."""
    oldest = batchyard.run(["1", "2", "3"], "noop", store=str(store_path)).id
    newest = batchyard.run(["4", "5"], "noop", store=str(store_path)).id
    return oldest, newest


def test_status_and_list(store_path: Path) -> None:
    oldest, newest = make_batches(store_path)

    listed = cli_json("list", "--json", "--store", store_path)
    # (the order of batches created in the same second is checked in test_list_is_newest_first)
    assert {b["batch_id"]: b["items_total"] for b in listed} == {oldest: 3, newest: 2}
    assert all(b["status"] == "completed" for b in listed)

    latest = cli_json("status", "--json", "--store", store_path)  # no id: the latest batch
    assert latest.keys() >= STATUS_KEYS
    assert latest["batch_id"] in (oldest, newest)
    st = cli_json("status", oldest, "--json", "--store", store_path)
    assert st.keys() >= STATUS_KEYS
    assert st["processor"] == "noop"
    assert (st["items_total"], st["items_succeeded"], st["items_pending"], st["items_running"]) == (3, 3, 0, 0)
    assert st["items_failed"] == 0 and st["items_cancelled"] == 0
    assert st["progress_percent"] == 100.0
    assert st["created_at"] and st["started_at"] and st["completed_at"]
    assert st["throughput_per_s"] is None or st["throughput_per_s"] > 0

    human = cli("status", oldest, "--store", store_path)
    assert human.returncode == 0 and oldest in human.stdout and "completed" in human.stdout
    table = cli("list", "--store", store_path)
    assert table.returncode == 0 and newest in table.stdout
    missing = cli("status", "batch_nope", "--store", store_path)
    assert missing.returncode == 2 and "batch_nope" in missing.stderr


def test_list_is_newest_first(store_path: Path) -> None:
    engine = Engine(open_store(str(store_path)))
    wait_for(lambda: time.time() % 1 < 0.5, timeout=2, interval=0.01, what="the start of a second")
    created = [engine.submit(BatchSpec(processor="noop", description=str(i)), [(None, i)], start=False).batch_id
               for i in range(8)]
    listed = [b["batch_id"] for b in cli_json("list", "--json", "--store", store_path)]
    latest = cli_json("status", "--json", "--store", store_path)["batch_id"]
    assert listed == created[::-1]
    assert latest == created[-1]


def test_results_and_cleanup(tmp_path: Path, store_path: Path) -> None:
    oldest, newest = make_batches(store_path)

    out = tmp_path / "export.csv"
    res = cli("results", oldest, "--output", out, "--format", "csv", "--store", store_path)
    assert res.returncode == 0, res.stderr
    rows = read_csv(out)
    assert [csv_value(r["input"]) for r in rows] == ["1", "2", "3"]
    assert {r["status"] for r in rows} == {"succeeded"}
    stdout_json = cli("results", newest, "--store", store_path)  # default: JSON to stdout
    assert stdout_json.returncode == 0
    assert [r["input"] for r in json.loads(stdout_json.stdout)["results"]] == ["4", "5"]

    # A batch that is not finished survives cleanup.
    engine = Engine(open_store(str(store_path)))
    pending = engine.submit(BatchSpec(processor="noop"), [(None, "x")], start=False)
    assert cli("cleanup", "--days-old", "1", "--store", store_path).returncode == 0
    assert len(batch_ids(store_path)) == 3  # nothing that old

    res = cli("cleanup", "--days-old", "0", "--store", store_path)

    assert res.returncode == 0, res.stderr
    assert "2" in res.stdout
    assert batch_ids(store_path) == [pending.batch_id]


def test_processors_json(procs_file: Path) -> None:
    procs = {p["name"]: p for p in cli_json("processors", "--json")}
    assert {"noop", "sleep", "sha256", "shell"} <= procs.keys()
    for p in procs.values():
        assert {"name", "description", "params_schema"} <= p.keys()
        assert p["description"]
    assert "ms" in procs["sleep"]["params_schema"]["properties"]
    assert "command" in procs["shell"]["params_schema"]["properties"]
    assert "command" in procs["shell"]["params_schema"].get("required", [])

    with_file = {p["name"]: p for p in cli_json("processors", "--json", "--processors", procs_file)}
    assert {"record", "flaky", "fail-even", "too-slow"} <= with_file.keys()
    assert with_file["too-slow"]["timeout"] == 0.3
    assert with_file["flaky"]["description"] == "Fails the first two attempts of every item."

    table = cli("processors")
    assert table.returncode == 0 and "sleep" in table.stdout and "sha256" in table.stdout


def test_shell_processor(tmp_path: Path, store_path: Path) -> None:
    src = write_lines(tmp_path / "words.txt", ["hello", "two words", "it's"])
    out = tmp_path / "r.json"
    res = cli("run", src, "-p", "shell", "--param", "command=echo got:{}", "--store", store_path, "-o", out)
    assert res.returncode == 0, res.stderr
    results = load_results(out)["results"]
    assert [r["result"]["stdout"] for r in results] == ["got:hello\n", "got:two words\n", "got:it's\n"]
    assert all(r["result"]["exit_code"] == 0 for r in results)


def test_shell_processor_failing_command(tmp_path: Path, store_path: Path) -> None:
    src = write_lines(tmp_path / "words.txt", ["ok", "bad", "fine"])
    out = tmp_path / "r.json"
    res = cli("run", src, "-p", "shell", "--param", "command=test {} != bad", "--store", store_path, "-o", out)
    assert res.returncode == 1
    by_input = {r["input"]: r for r in load_results(out)["results"]}
    assert by_input["bad"]["status"] == "failed"
    assert "exit code 1" in by_input["bad"]["error"]["message"]
    assert by_input["ok"]["status"] == by_input["fine"]["status"] == "succeeded"


def test_sha256_over_files(tmp_path: Path, store_path: Path) -> None:
    files = []
    for i, content in enumerate([b"", b"hello\n", bytes(range(256)) * 1000]):
        f = tmp_path / f"file{i}.bin"
        f.write_bytes(content)
        files.append(f)
    src = write_lines(tmp_path / "files.txt", [*files, tmp_path / "missing.bin"])
    out = tmp_path / "r.json"

    res = cli("run", src, "-p", "sha256", "--store", store_path, "-o", out)

    assert res.returncode == 1  # the missing file fails
    results = {r["input"]: r for r in load_results(out)["results"]}
    for f in files:
        r = results[str(f)]
        assert r["status"] == "succeeded"
        assert r["result"]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert r["result"]["size"] == f.stat().st_size
    missing = results[str(tmp_path / "missing.bin")]
    assert missing["status"] == "failed" and missing["attempts"] == 1


def test_dry_run_creates_no_batch(tmp_path: Path, store_path: Path) -> None:
    src = write_lines(tmp_path / "items.txt", range(7))
    res = cli("run", src, "-p", "noop", "--dry-run", "--store", store_path)
    assert res.returncode == 0, res.stderr
    assert "7" in res.stdout
    assert batch_ids(store_path) == []
    # and a dry run still validates
    assert cli("run", src, "-p", "nope", "--dry-run", "--store", store_path).returncode == 2
    assert cli("run", tmp_path / "none.txt", "-p", "noop", "--dry-run", "--store", store_path).returncode == 2


def test_dry_run_creates_no_store_file(tmp_path: Path, store_path: Path) -> None:
    src = write_lines(tmp_path / "items.txt", range(3))
    assert cli("run", src, "-p", "noop", "--dry-run", "--store", store_path).returncode == 0
    assert not store_path.exists()
    assert not store_path.parent.exists()
