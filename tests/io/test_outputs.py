"""Output details: summary statistics, CSV columns, the injection guard, OpenAI lines, manifests."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest

from batchyard.core.models import BatchInfo, ItemError, ItemInfo
from batchyard.io import csv_output, outputs
from batchyard.io.flatten import cell, neutralise
from batchyard.io.manifest import entry, find_ref

pytestmark = pytest.mark.timeout(30)


def item(seq: int, payload: Any = None, result: Any = None, status: str = "succeeded",
         error: ItemError | None = None) -> ItemInfo:
    return ItemInfo(batch_id="b1", item_id=str(seq), seq=seq, status=status, attempts=1, payload=payload,
                    result=result, error=error)


def batch(**over: Any) -> BatchInfo:
    now = datetime.now(UTC)
    base = dict(batch_id="b1", tenant="default", processor="p", status="completed", priority="normal", parallel=2,
                params={}, failure_policy={}, max_attempts=3, webhook=None, description=None, tags=[],
                source=None, fingerprint=None, items_total=4, items_pending=0, items_running=0,
                items_succeeded=3, items_failed=1, items_cancelled=0, attempts_total=6, cost_total=0.25,
                cost_unit="USD", created_at=now, started_at=now, completed_at=now, updated_at=now,
                active_seconds=12.5)
    base.update(over)
    return BatchInfo(**base)


def csv_rows(items: list[ItemInfo]) -> list[dict[str, str]]:
    buf = io.StringIO(newline="")
    csv_output.write_csv(lambda: iter(items), buf)
    return list(csv.DictReader(io.StringIO(buf.getvalue(), newline="")))


def test_summary_totals_and_numeric_fields() -> None:
    results = [item(1, result={"confidence": 0.981, "offset_seconds": -15.0, "ok": True, "nested": {"v": 2}}),
               item(2, result={"confidence": 0.865, "offset_seconds": 3, "nested": {"v": 4}, "label": "x"}),
               item(3, result={"confidence": float("nan")}), item(4, result=[1, 2]), item(5, result=None)]
    s = outputs.summary(batch(), iter(results))
    assert (s["items_total"], s["succeeded"], s["failed"], s["success_rate"]) == (4, 3, 1, 0.75)
    assert s["processing_time_s"] == 12.5 and s["attempts"] == 6 and s["cost"] == 0.25 and s["partial"] is False
    assert s["fields"]["confidence"] == {"count": 2, "mean": pytest.approx(0.923), "min": 0.865, "max": 0.981,
                                         "sum": pytest.approx(1.846)}
    assert s["fields"]["offset_seconds"]["min"] == -15.0 and s["fields"]["nested.v"]["mean"] == 3
    assert "ok" not in s["fields"] and "label" not in s["fields"]  # booleans and text are not numbers
    running = outputs.summary(batch(status="running", completed_at=None, items_pending=2))
    assert running["partial"] is True and running["pending"] == 2 and "fields" not in running


@pytest.mark.parametrize(("text", "expected"), [
    ("=1+1", "'=1+1"), ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("-15.023", "-15.023"), ("+3", "+3"), ("1e-5", "1e-5"), ("a=b", "a=b"),
    ("", ""), ("'quoted", "'quoted"),
])
def test_injection_guard(text: str, expected: str) -> None:
    assert neutralise(text) == expected


def test_cells() -> None:
    assert cell(None) == "" and cell(True) == "true" and cell(-15.023) == "-15.023" and cell(7) == "7"
    assert cell(["mfcc", "ai"]) == '["mfcc","ai"]' and cell(["mfcc", "ai"], "comma") == "mfcc,ai"
    assert cell(["a,b", "c"], "comma") == '["a,b","c"]' and cell({}) == "{}"
    assert cell(["=cmd"], "comma") == "'=cmd"


def test_csv_columns_union_collisions_and_errors() -> None:
    rows = csv_rows([
        item(1, {"status": "from input", "file": "a"}, {"x": 1}),
        item(2, "scalar input", {"y": {"z": [1, 2]}}),
        item(3, {"file": "c"}, None, "failed", ItemError(type="ValueError", message="=bad")),
    ])
    assert list(rows[0]) == ["item_id", "status", "input.status", "file", "input", "result.x", "result.y.z",
                             "error_type", "error_message", "attempts", "duration_s", "cost"]
    assert rows[0]["status"] == "succeeded" and rows[0]["input.status"] == "from input"
    assert rows[1]["input"] == "scalar input" and rows[1]["result.y.z"] == "[1,2]"
    assert rows[2]["error_type"] == "ValueError" and rows[2]["error_message"] == "'=bad" and rows[2]["result.x"] == ""


def test_csv_too_many_fields_fall_back_to_one_json_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_output, "MAX_COLUMNS", 3)
    rows = csv_rows([item(i, {"k": i}, {f"f{i}": i}) for i in range(5)])
    assert "result" in rows[0] and not any(c.startswith("result.") for c in rows[0])
    assert rows[4]["result"] == '{"f4":4}' and rows[4]["k"] == "4"


def test_openai_output_lines() -> None:
    payload = {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": {}}
    ok_line = outputs.openai_record(item(1, payload, {"choices": []}))
    assert ok_line["custom_id"] == "req-1" and ok_line["error"] is None
    assert ok_line["response"]["status_code"] == 200 and ok_line["response"]["body"] == {"choices": []}
    wrapped = outputs.openai_record(item(1, payload, {"status_code": 201, "body": {"a": 1}}))
    assert wrapped["response"]["status_code"] == 201 and wrapped["response"]["body"] == {"a": 1}
    failed = outputs.openai_record(item(2, payload, None, "failed", ItemError(type="RateLimit", message="slow")))
    assert failed["response"] is None and failed["error"] == {"code": "RateLimit", "message": "slow"}
    cancelled = outputs.openai_record(item(3, payload, None, "cancelled"))
    assert cancelled["error"]["code"] == "cancelled"
    assert ok_line["id"] != failed["id"]


def test_manifest_reference_field() -> None:
    assert find_ref({"id": 1, "swarm_ref": "abc"}) == ("swarm_ref", "abc")
    assert find_ref({"reference": "r", "ref": None}) == ("reference", "r")
    assert find_ref({"other": 1}) == (None, None)
    assert find_ref({"deep": {"cid": "Qm"}}, "deep.cid") == ("deep.cid", "Qm")
    e = entry(item(1, {"path": "/data/log_001.txt", "size": 10}, {"swarm_ref": "s"}))
    assert e == {"item_id": "1", "name": "log_001.txt", "size": 10, "status": "succeeded", "swarm_ref": "s"}
    e = entry(item(2, "upc-1", {"size": 3}))
    assert e["name"] == "upc-1" and e["size"] == 3 and e["reference"] is None
