"""The request guards in process: the JSON nesting check against a parser's own count, request ids, and a
500 that shows the id and nothing of the error."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from batchyard.core.engine import Engine
from batchyard.io.nesting import MAX_JSON_DEPTH, json_too_deep
from batchyard.server.app import create_app
from batchyard.server.settings import Settings
from batchyard.store import open_store


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nested(n: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(n):
        value = [value] if i % 2 else {"k": value}
    return value


tricky_text = st.text(alphabet='[]{}"\\ab', max_size=8)
values = st.recursive(st.none() | st.integers() | tricky_text,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
                      max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(values, st.integers(min_value=0, max_value=6))
def test_the_depth_check_agrees_with_the_parser(value: Any, limit: int) -> None:
    text = json.dumps(value)
    assert json_too_deep(text, limit) == (depth(value) > limit), text


@pytest.mark.parametrize("n", [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 10_000])
def test_the_limit_is_exact(n: int) -> None:
    assert json_too_deep(json.dumps(nested(n)) if n < 500 else "[" * n + "]" * n) == (n > MAX_JSON_DEPTH)


def test_brackets_in_strings_neither_hide_nor_add_depth() -> None:
    hidden = '{"a": "' + "]" * 500 + '", "b": ' + "[" * 200 + "]" * 200 + "}"
    assert json_too_deep(hidden)  # a string of ']' does not cancel the nesting after it
    assert not json_too_deep(json.dumps({"text": "[" * 500 + '\\"{'}))
    assert not json_too_deep(json.dumps(["[" * 200] * 200))


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Engine(open_store(str(tmp_path / "s.db"))), Settings(workers=0))

    def boom() -> None:
        raise RuntimeError("secret detail: /etc/shadow")

    app.router.add_api_route("/api/v1/boom", boom)
    app.router.routes.insert(0, app.router.routes.pop())  # ahead of the dashboard's catch-all
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_every_response_carries_a_request_id(app_client: TestClient) -> None:
    assert app_client.get("/api/v1/batches", headers={"X-Request-ID": "client-7.a"}).headers["x-request-id"] == \
        "client-7.a"
    for odd in ("has space", "x" * 200, "tab\there"):  # replaced: not echoed into our logs or headers
        rid = app_client.get("/api/v1/batches", headers={"X-Request-ID": odd}).headers["x-request-id"]
        assert rid != odd and len(rid) == 16
    assert len(app_client.get("/no/such").headers["x-request-id"]) == 16  # errors too
    too_big = app_client.post("/api/v1/batches", content=b"x" * 200, headers={"content-length": str(10**12)})
    assert too_big.status_code == 413 and too_big.headers["x-request-id"]


def test_a_500_shows_the_request_id_and_no_trace(app_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="batchyard.server"):
        r = app_client.get("/api/v1/boom", headers={"X-Request-ID": "req-42"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "req-42"
    assert r.json() == {"error": {"code": "internal_error", "details": {"request_id": "req-42"},
                                  "message": "internal server error; see the server log for request req-42"}}
    assert "shadow" not in r.text and "Traceback" not in r.text
    (record,) = [rec for rec in caplog.records if "unhandled error" in rec.getMessage()]
    assert "request req-42" in record.getMessage() and record.exc_info is not None  # the trace is in the log


def test_deep_json_is_422_before_parsing(app_client: TestClient) -> None:
    body = '{"processor": "noop", "items": [' + "[" * 10_000 + "]" * 10_000 + "]}"
    r = app_client.post("/api/v1/batches", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert "nests JSON deeper than 100 levels" in r.json()["error"]["message"]
    assert app_client.get("/api/v1/batches").json()["batches"] == []


def test_values_are_measured_without_recursion() -> None:
    from batchyard.io.nesting import value_too_deep

    deep: Any = 1
    for _ in range(50_000):  # far past the recursion limit: the check itself must not recurse
        deep = [deep]
    assert value_too_deep(deep) and not value_too_deep(nested(MAX_JSON_DEPTH))
    assert value_too_deep(nested(MAX_JSON_DEPTH + 1)) and not value_too_deep("x" * 10)
