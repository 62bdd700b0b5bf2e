"""Batches over HTTP against a real server: create, read, control, export, and the error shape."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import httpx
import pytest
from _serve_support import wait_for

from batchyard import Client
from batchyard.client import ConflictError, InvalidRequestError, NotFoundError
from batchyard.server.schemas import ValidationReport

SEED_004_CSV = """master_file,dub_file,methods,ai_model,description,tags
/mnt/data/master1.mov,/mnt/data/dub1.mov,"mfcc,ai",wav2vec2,Dunkirk Inside Cockpit sync test,"test,dunkirk"
/mnt/data/master2.mov,/mnt/data/dub2.mov,"onset,spectral",,Dunkirk Taking to Air sync test,"test,air"
/mnt/data/fail3.mov,/mnt/data/dub3.mov,ai,wav2vec2,Dunkirk In Camera Approach,"test,camera"
"""

BAD_CSV = """master_file,dub_file,methods,ai_model
/m/1.mov,/d/1.mov,mfcc,
/m/2.mov,,mfcc,
/m/3.mov,/d/3.mov,telepathy,
/m/4.mov,/d/4.mov,ai,gpt-99
"""


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


def test_inline_batch_runs_and_every_read_works(http: httpx.Client, client: Client, tmp_path: Path) -> None:
    r = http.post("/batches", json={"processor": "slow", "items": ["a", "b", "c", "d", "e"], "parallel_jobs": 2,
                                    "description": "inline", "tags": ["t1", "t2"], "priority": "high"})
    assert r.status_code == 201, r.text
    created = r.json()
    bid = created["batch_id"]
    assert r.headers["location"] == f"/api/v1/batches/{bid}"
    assert created["items_total"] == 5 and created["tenant"] == "default" and created["priority"] == "high"

    final = client.wait(bid, timeout=15)
    assert final.status == "completed" and final.items_succeeded == 5 and final.progress_percent == 100.0

    detail = http.get(f"/batches/{bid}", params={"include_details": "true"}).json()
    assert [it["payload"] for it in detail["items"]] == ["a", "b", "c", "d", "e"]
    assert http.get(f"/batches/{bid}").json()["items"] is None

    page = http.get(f"/batches/{bid}/items", params={"limit": 2}).json()
    assert [it["seq"] for it in page["items"]] == [1, 2] and page["next_after"] == 2
    page2 = http.get(f"/batches/{bid}/items", params={"limit": 2, "after": page["next_after"]}).json()
    assert [it["seq"] for it in page2["items"]] == [3, 4]
    assert http.get(f"/batches/{bid}/items", params={"status": "failed"}).json() == {"items": [], "next_after": None}
    assert [it.payload for it in client.iter_items(bid)] == ["a", "b", "c", "d", "e"]

    item = client.get_item(bid, "3")
    assert item.payload == "c" and item.result == {"value": "c"} and item.status == "succeeded"

    assert any(b.batch_id == bid for b in client.list_batches(tag="t2", processor="slow").batches)
    assert all(b.batch_id != bid for b in client.list_batches(tag="nope").batches)

    # results, streamed, in the three formats
    doc = http.get(f"/batches/{bid}/results").json()
    assert doc["summary"]["succeeded"] == 5 and len(doc["results"]) == 5
    lines = http.get(f"/batches/{bid}/results", params={"format": "jsonl"}).text.splitlines()
    assert [json.loads(x)["input"] for x in lines] == ["a", "b", "c", "d", "e"]
    r = http.get(f"/batches/{bid}/results", params={"format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    assert [row["input"] for row in csv.DictReader(io.StringIO(r.text))] == ["a", "b", "c", "d", "e"]
    out = client.results(bid, tmp_path / "r.jsonl", format="jsonl")
    assert out.read_text().count("\n") == 5

    # a final batch can be deleted; then it is gone
    assert http.delete(f"/batches/{bid}").status_code == 204
    assert_error(http.get(f"/batches/{bid}"), 404, "batch_not_found")


def test_list_is_paginated_newest_first(http: httpx.Client, client: Client) -> None:
    ids = [client.create_batch("slow", [i], tags=["paged"]).batch_id for i in range(5)]
    first = http.get("/batches", params={"tag": "paged", "limit": 2}).json()
    assert [b["batch_id"] for b in first["batches"]] == ids[::-1][:2]
    seen = [b.batch_id for b in client.iter_batches(tag="paged", limit=2)]
    assert seen == ids[::-1]
    assert client.list_batches(tag="paged", status="cancelled").batches == []
    later = client.list_batches(tag="paged", created_after=client.get_batch(ids[-1]).created_at).batches
    assert [b.batch_id for b in later] == [ids[-1]]


def test_upload_seed_004_csv(http: httpx.Client, client: Client) -> None:
    r = http.post("/batches/upload", files={"file": ("sample_batch.csv", SEED_004_CSV.encode(), "text/csv")},
                  data={"processor": "sync-analyze", "parallel_jobs": "2", "tags": "seed004,upload",
                        "description": "seed 004"})
    assert r.status_code == 201, r.text
    bid = r.json()["batch_id"]
    assert r.json()["tags"] == ["seed004", "upload"] and r.json()["source"] == "sample_batch.csv"
    final = client.wait(bid, timeout=15)
    assert (final.items_succeeded, final.items_failed) == (2, 1)
    rows = list(csv.DictReader(io.StringIO(http.get(f"/batches/{bid}/results", params={"format": "csv"}).text)))
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "failed"]
    assert rows[0]["result.offset_seconds"] == "-15.023"
    errors = http.get(f"/batches/{bid}/results", params={"format": "json", "errors_only": "true"}).json()
    assert [x["item_id"] for x in errors["results"]] == ["3"]
    assert "cannot open" in errors["results"][0]["error"]["message"]


def test_bad_csv_is_422_with_every_row_number_and_creates_nothing(http: httpx.Client, client: Client) -> None:
    before = len(client.list_batches(processor="sync-analyze", limit=1000).batches)
    r = http.post("/batches/upload", files={"file": ("bad.csv", BAD_CSV.encode())},
                  data={"processor": "sync-analyze"})
    err = assert_error(r, 422, "invalid_input")
    lines = sorted({p["line"] for p in err["details"]})
    assert lines == [3, 4, 5], err
    assert all(p["source"] == "bad.csv" for p in err["details"])
    assert len(client.list_batches(processor="sync-analyze", limit=1000).batches) == before

    # dry run and validate report the same, and create nothing
    dry = http.post("/batches/upload", files={"file": ("bad.csv", BAD_CSV.encode())},
                    data={"processor": "sync-analyze", "dry_run": "true"})
    assert dry.status_code == 200 and dry.json()["valid"] is False
    assert sorted({p["line"] for p in dry.json()["problems"]}) == [3, 4, 5]
    report = client.upload(io.BytesIO(BAD_CSV.encode()), "sync-analyze", filename="bad.csv", dry_run=True)
    assert isinstance(report, ValidationReport) and not report.valid and report.items == 1
    inline = http.post("/batches", json={"processor": "slow", "items": [1, 2, 3], "dry_run": True})
    assert inline.status_code == 200 and inline.json()["valid"] and inline.json()["items"] == 3
    ok = client.validate("slow", ["x", "y"])
    assert ok.valid and ok.items == 2 and ok.problems == []
    assert len(client.list_batches(processor="sync-analyze", limit=1000).batches) == before


def test_inline_items_are_checked_against_the_params_model(http: httpx.Client) -> None:
    items = [{"master_file": "/m/1", "dub_file": "/d/1"}, {"master_file": "/m/2"}, {"dub_file": "/d/3"}]
    err = assert_error(http.post("/batches", json={"processor": "sync-analyze", "items": items}), 422,
                       "invalid_input")
    assert sorted(p["reason"].split(":")[0] for p in err["details"]) == ["item 2", "item 3"]
    assert {p["column"] for p in err["details"]} == {"dub_file", "master_file"}
    report = http.post("/batches/validate", json={"processor": "sync-analyze", "items": items}).json()
    assert report["valid"] is False and len(report["problems"]) == len(err["details"])


def test_input_uri_reads_a_server_side_file(http: httpx.Client, client: Client, tmp_path: Path) -> None:
    path = tmp_path / "codes.txt"
    path.write_text("1\n2\n3\n")
    b = client.create_batch("slow", input_uri=str(path))
    assert b.items_total == 3 and b.source == str(path)
    assert client.wait(b.batch_id, timeout=10).items_succeeded == 3


def test_pause_resume_cancel_and_illegal_transitions(http: httpx.Client, client: Client) -> None:
    b = client.create_batch("slow", list(range(60)), params={"ms": 40}, parallel_jobs=2)
    wait_for(lambda: client.get_batch(b.batch_id).items_succeeded >= 2)
    paused = client.pause(b.batch_id)
    assert paused.status == "paused" and paused.pause_reason == "user"
    wait_for(lambda: client.get_batch(b.batch_id).items_running == 0, timeout=5)
    settled = client.get_batch(b.batch_id).items_succeeded
    err = assert_error(http.post(f"/batches/{b.batch_id}/pause"), 409, "invalid_transition")
    assert err["details"] == {"current": "paused", "action": "pause", "allowed_from": ["running"]}
    assert "allowed only when the batch is running" in err["message"]
    import time

    time.sleep(0.4)
    assert client.get_batch(b.batch_id).items_succeeded == settled  # nothing ran while paused

    assert client.resume(b.batch_id).status == "running"
    wait_for(lambda: client.get_batch(b.batch_id).items_succeeded > settled)
    client.cancel(b.batch_id)
    final = client.wait(b.batch_id, timeout=10)
    assert final.status == "cancelled" and final.items_cancelled > 0
    assert final.items_succeeded + final.items_cancelled == 60

    with pytest.raises(ConflictError) as exc:
        client.resume(b.batch_id)
    assert exc.value.code == "invalid_transition" and exc.value.details["allowed_from"] == ["paused"]
    err = assert_error(http.post(f"/batches/{b.batch_id}/start"), 409, "invalid_transition")
    assert err["details"]["allowed_from"] == ["pending"]


def test_delete_refuses_a_batch_that_is_not_final(http: httpx.Client, client: Client) -> None:
    b = client.create_batch("slow", [1, 2], start=False)
    assert b.status == "pending"
    err = assert_error(http.delete(f"/batches/{b.batch_id}"), 409, "invalid_transition")
    assert err["details"]["allowed_from"] == ["cancelled", "completed", "failed"]
    assert client.start(b.batch_id).status == "running"
    client.wait(b.batch_id, timeout=10)
    client.delete_batch(b.batch_id)
    with pytest.raises(NotFoundError):
        client.get_batch(b.batch_id)


def test_retry_reruns_failed_items(client: Client, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.write_text("up")
    b = client.create_batch("slow", ["a", "b", "c"], params={"flag": str(flag)})
    done = client.wait(b.batch_id, timeout=10)
    assert done.status == "completed" and done.items_failed == 3
    flag.unlink()
    assert client.retry(b.batch_id).status == "running"
    again = client.wait(b.batch_id, timeout=10)
    assert again.status == "completed" and again.items_succeeded == 3 and again.items_failed == 0
    assert client.get_item(b.batch_id, "1").result == {"value": "a"}


def test_not_found_and_request_errors_share_the_shape(http: httpx.Client, client: Client) -> None:
    assert_error(http.get("/batches/batch_nope"), 404, "batch_not_found")
    assert_error(http.post("/batches/batch_nope/pause"), 404, "batch_not_found")
    assert_error(http.get("/batches/batch_nope/events"), 404, "batch_not_found")
    assert_error(http.get("/batches/batch_nope/results"), 404, "batch_not_found")
    b = client.create_batch("slow", [1])
    assert_error(http.get(f"/batches/{b.batch_id}/items/99"), 404, "item_not_found")
    assert_error(http.get("/no/such/route"), 404, "not_found")
    assert_error(http.post("/batches", json={"processor": "nope", "items": [1]}), 422, "processor_not_found")
    err = assert_error(http.post("/batches", json={"processor": "slow", "items": [1], "parallel_jobs": 0}), 422,
                       "invalid_request")
    assert err["details"][0]["column"] == "body.parallel_jobs"
    assert_error(http.post("/batches", json={"processor": "slow"}), 422, "invalid_request")
    assert_error(http.get(f"/batches/{b.batch_id}/results", params={"format": "xml"}), 422, "invalid_request")
    with pytest.raises(InvalidRequestError) as exc:
        client.create_batch("slow", [1], parallel_jobs=0)
    assert exc.value.status_code == 422
    # an option this server does not know is refused, never silently ignored
    err = assert_error(http.post("/batches", json={"processor": "slow", "items": [1], "web_hook": "http://x"}), 422,
                       "invalid_request")
    assert err["details"][0]["column"] == "body.web_hook"


def test_compressed_upload_and_a_large_streamed_export(http: httpx.Client, client: Client, tmp_path: Path) -> None:
    lines = "".join(f"{i}\n" for i in range(5000)).encode()
    b = client.upload(io.BytesIO(gzip.compress(lines)), "noop", filename="codes.txt.gz", parallel_jobs=8)
    assert b.items_total == 5000
    client.wait(b.batch_id, timeout=15)
    with http.stream("GET", f"/batches/{b.batch_id}/results", params={"format": "jsonl"}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        assert 'filename="' + b.batch_id + '.jsonl"' in r.headers["content-disposition"]
        count = sum(chunk.count(b"\n") for chunk in r.iter_bytes())
    assert count == 5000
    path = client.results(b.batch_id, tmp_path / "out.csv", format="csv")
    assert path.read_text().count("\n") == 5001 and not (tmp_path / "out.csv.partial").exists()


def test_bodies_over_the_limit_are_413(http: httpx.Client) -> None:
    big = b"x" * (1024 * 1024 + 10)
    err = assert_error(http.post("/batches/upload", files={"file": ("big.txt", big)}, data={"processor": "slow"}),
                       413, "payload_too_large")
    assert err["details"] == {"limit_bytes": 1024 * 1024}

    def chunked():  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b"y" * 65536

    r = http.post("/batches", content=chunked(), headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large")
