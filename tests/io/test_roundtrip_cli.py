"""Every input format through ``batchyard run`` and every output format back out, with the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _io_support import SEED_004_CSV, batch_ids, cli, ok, read_csv_text, read_jsonl

from batchyard.io.inputs import open_input

pytestmark = pytest.mark.timeout(60)


def req(cid: str, content: str) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}}


def test_csv_in_csv_out_and_errors_only_resubmits(tmp_path: Path) -> None:
    src = tmp_path / "batch.csv"
    src.write_text(SEED_004_CSV + '/mnt/fail.wav,/mnt/dub.wav,"mfcc,onset",,"has ""quotes"", commas",x\n'
                   "/mnt/evil.wav,/d.wav,ai,,=1+1,@SUM(A1)\n")
    store, out = tmp_path / "s.db", tmp_path / "results.csv"
    res = ok(cli("run", src, "-p", "sync-analyze", "-o", out, store=store), 1)  # one item failed
    assert "wrote 5 results" in res.stderr
    rows = read_csv_text(out.read_text())
    assert list(rows[0]) == ["item_id", "status", "master_file", "dub_file", "methods", "ai_model", "description",
                             "tags", "result.offset_seconds", "result.confidence", "result.method_used",
                             "result.detail.channels", "result.detail.frames", "error_type", "error_message",
                             "attempts", "duration_s", "cost"]
    assert rows[0]["methods"] == "mfcc,ai" and rows[0]["result.offset_seconds"] == "-15.023"
    assert rows[0]["result.detail.channels"] == "2"
    assert rows[3]["status"] == "failed" and rows[3]["error_type"] == "PermanentError"
    assert rows[3]["error_message"] == "cannot open /mnt/fail.wav" and rows[3]["result.confidence"] == ""
    assert rows[3]["description"] == 'has "quotes", commas'
    # Formula injection: text that a spreadsheet would run is neutralised; negative numbers are not.
    assert rows[4]["description"] == "'=1+1" and rows[4]["tags"] == "'@SUM(A1)"
    assert rows[4]["result.method_used"] == "'=HYPERLINK(\"http://evil\")"
    # Errors only: the failed rows, in a CSV that is a valid input again.
    failed = tmp_path / "failed.csv"
    ok(cli("results", batch_ids(store)[0], "--errors-only", "-o", failed, store=store))
    again = list(open_input(str(failed), processor=_proc("sync-analyze")).items())
    assert len(again) == 1
    assert again[0][1]["master_file"] == "/mnt/fail.wav" and again[0][1]["methods"] == ["mfcc", "onset"]
    assert again[0][1]["error_type"] == "PermanentError"  # extra columns ride along


def _proc(name: str):
    import sample_processors  # noqa: F401  (registers the processors)

    from batchyard.core import processor as registry

    return registry.get(name)


def test_openai_jsonl_in_openai_jsonl_out(tmp_path: Path) -> None:
    src = tmp_path / "requests.jsonl"
    src.write_text("".join(json.dumps(req(c, f"hello {c}")) + "\n" for c in ("r1", "r2", "bad-3", "r4")))
    store, out = tmp_path / "s.db", tmp_path / "out.jsonl"
    ok(cli("run", src, "-p", "openai-echo", "-o", out, store=store), 1)
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == ["r1", "r2", "bad-3", "r4"]
    first = lines[0]
    assert set(first) == {"id", "custom_id", "response", "error"}
    assert first["id"].startswith("batch_req_") and first["error"] is None
    assert first["response"]["status_code"] == 200 and first["response"]["request_id"].startswith("req_")
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "HELLO R1"
    assert lines[2]["response"] is None
    assert lines[2]["error"] == {"code": "PermanentError", "message": "model refused the request"}
    errors = tmp_path / "errors.jsonl"
    ok(cli("results", batch_ids(store)[0], "--errors-only", "-o", errors, store=store))
    assert [line["custom_id"] for line in read_jsonl(errors)] == ["bad-3"]
    # The item ids are the custom_ids.
    res = ok(cli("results", batch_ids(store)[0], "--format", "json", store=store))
    assert [r["item_id"] for r in json.loads(res.stdout)["results"]] == ["r1", "r2", "bad-3", "r4"]


def test_json_array_in_json_out_with_summary(tmp_path: Path) -> None:
    src = tmp_path / "codes.json"
    src.write_text(json.dumps(["012345678905", "036000291452", "not-a-code"]))
    store, out = tmp_path / "s.db", tmp_path / "out.json"
    ok(cli("run", src, "-p", "upc", "-o", out, store=store), 1)
    data = json.loads(out.read_text())
    assert list(data) == ["batch_id", "status", "partial", "errors_only", "summary", "results"]
    assert data["status"] == "completed" and data["partial"] is False
    s = data["summary"]
    assert (s["items_total"], s["succeeded"], s["failed"], s["success_rate"]) == (3, 2, 1, 0.6667)
    assert s["attempts"] == 3 and s["processing_time_s"] >= 0 and s["cost"] == 0
    assert s["fields"] == {"price": {"count": 2, "mean": pytest.approx(2.85), "min": 0.5, "max": 5.2,
                                     "sum": pytest.approx(5.7)}}
    assert [r["input"] for r in data["results"]] == ["012345678905", "036000291452", "not-a-code"]
    assert data["results"][2]["error"]["message"] == "not a UPC code: 'not-a-code'"
    only = ok(cli("results", data["batch_id"], "--errors-only", store=store))
    errs = json.loads(only.stdout)
    assert errs["errors_only"] is True and [r["input"] for r in errs["results"]] == ["not-a-code"]
    assert errs["summary"]["items_total"] == 3  # the summary is still the batch's


def test_text_from_stdin_to_jsonl(tmp_path: Path) -> None:
    store, out = tmp_path / "s.db", tmp_path / "out.jsonl"
    ok(cli("run", "-", "-p", "upc", "-o", out, store=store, input="# codes\n111\n\n222\n"))
    records = read_jsonl(out)
    assert [(r["input"], r["result"]["upc"]) for r in records] == [("111", "111"), ("222", "222")]
    assert set(records[0]) >= {"item_id", "status", "input", "result", "error", "attempts"}


def test_directory_in_manifest_out(tmp_path: Path) -> None:
    root = tmp_path / "sample_files"
    root.mkdir()
    for i in range(1, 6):
        (root / f"log_00{i}.txt").write_text("x" * (1000 + i))
    (root / "bad.txt").write_text("nope")
    store, manifest = tmp_path / "s.db", tmp_path / "manifest.json"
    ok(cli("run", root, "-p", "upload", "--manifest", manifest, store=store), 1)
    m = json.loads(manifest.read_text())
    assert m["version"] == "1.0" and m["created_at"].endswith("Z") and m["batch_id"] == batch_ids(store)[0]
    assert m["totals"] == {"items_total": 6, "succeeded": 5, "failed": 1, "cancelled": 0, "pending": 0}
    assert m["partial"] is False
    by_name = {e["name"]: e for e in m["items"]}
    assert by_name["log_001.txt"]["size"] == 1001 and len(by_name["log_001.txt"]["swarm_ref"]) == 64
    assert by_name["bad.txt"]["status"] == "failed" and by_name["bad.txt"]["error"] == "PermanentError: refused"
    assert m["total_size"] == sum(1000 + i for i in range(1, 6)) + 4
    # --manifest-ref picks another field; results can write the manifest later, too.
    res = ok(cli("results", m["batch_id"], "--manifest", "-", "--manifest-ref", "size", store=store))
    m2 = json.loads(res.stdout)
    assert m2["ref_field"] == "size" and m2["items"][1]["size"] == 1001


def test_rerun_resumes_and_input_format_override(tmp_path: Path) -> None:
    src = tmp_path / "requests.data"
    src.write_text(json.dumps(req("only", "x")) + "\n")
    store = tmp_path / "s.db"
    out = tmp_path / "o.json"
    ok(cli("run", src, "-p", "openai-echo", "--input-format", "jsonl", "-o", out, store=store))
    assert json.loads(out.read_text())["results"][0]["item_id"] == "only"
    res = ok(cli("run", src, "-p", "openai-echo", "--input-format", "jsonl", store=store))
    assert "already finished" in res.stderr and len(batch_ids(store)) == 1
    bad = cli("run", src, "-p", "openai-echo", "--input-format", "xml", store=store)
    assert bad.returncode == 2 and "xml" in bad.stderr


def test_export_while_running_is_partial(tmp_path: Path) -> None:
    """A batch stopped part-way (here: interrupted in process) exports what is done, marked partial."""
    import sample_processors  # noqa: F401

    from batchyard.core.engine import Engine
    from batchyard.core.models import BatchSpec
    from batchyard.io import outputs
    from batchyard.io.manifest import write_manifest
    from batchyard.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    try:
        engine = Engine(store)
        info = engine.submit(BatchSpec(processor="sleep", params={"ms": 20}, parallel=2),
                             [(None, str(i)) for i in range(200)])
        final = engine.run(info.batch_id, should_stop=lambda: store.get_batch(info.batch_id).items_succeeded >= 6,
                           grace=5)
        assert not final.is_final
        done = final.items_succeeded
        import io

        buf = io.StringIO()
        n = outputs.write_results(store, info.batch_id, buf, "json")
        data = json.loads(buf.getvalue())
        assert data["partial"] is True and data["summary"]["partial"] is True
        assert n == done == len(data["results"]) and all(r["status"] == "succeeded" for r in data["results"])
        buf = io.StringIO()
        write_manifest(store, info.batch_id, buf)
        assert json.loads(buf.getvalue())["partial"] is True
        res = ok(cli("results", info.batch_id, "-o", tmp_path / "p.csv", store=tmp_path / "s.db"))
        assert "partial" in res.stderr
        assert len(read_csv_text((tmp_path / "p.csv").read_text())) == done
    finally:
        store.close()
