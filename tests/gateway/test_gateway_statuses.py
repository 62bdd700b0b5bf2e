"""Every OpenAI batch status, from the batchyard states it is derived from; output and error files account
for every line exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import openai
import pytest
from _gateway_support import chat_lines, client, jsonl, upload, wait_status
from _serve_support import Server

from batchyard import Client
from batchyard.gateway.mock_upstream import MockUpstream


def _every_line_once(c: openai.OpenAI, b: object, n: int, prefix: str = "req") -> tuple[list[dict], list[dict]]:
    out = jsonl(c, b.output_file_id) if b.output_file_id else []  # type: ignore[attr-defined]
    err = jsonl(c, b.error_file_id) if b.error_file_id else []  # type: ignore[attr-defined]
    ids = [line["custom_id"] for line in out + err]
    assert sorted(ids) == sorted(f"{prefix}-{i}" for i in range(n))
    return out, err


def test_expired_when_the_completion_window_ends(start_gateway: Callable[..., Server],
                                                 upstream: MockUpstream) -> None:
    upstream.behaviour.latency_ms = 1500  # requests still in flight when the window ends: finalizing meanwhile
    s = start_gateway("--upstream-rpm", "600")  # 10 a second: 60 lines cannot finish in 2 s
    c = client(s)
    b = c.batches.create(input_file_id=upload(c, chat_lines(60)).id, endpoint="/v1/chat/completions",
                         completion_window="2s")
    seen = [b.status]
    done = wait_status(c, b.id, ("expired",), timeout=30, seen=seen)
    assert seen == ["validating", "in_progress", "finalizing", "expired"]
    assert done.expired_at and done.expires_at == done.created_at + 2 and done.completed_at is None
    counts = done.request_counts
    assert 0 < counts.completed < 60 and counts.completed + counts.failed == 60
    out, err = _every_line_once(c, done, 60)
    assert len(out) == counts.completed
    assert {line["error"]["code"] for line in err} == {"batch_expired"}
    assert all(line["response"] is None for line in err)
    with Client(s.url) as bc:
        info = bc.get_batch(b.id)
        assert info.status == "cancelled" and info.status_reason.startswith("expired")


def test_cancelling_with_requests_in_flight_then_cancelled(start_gateway: Callable[..., Server],
                                                           upstream: MockUpstream) -> None:
    upstream.behaviour.latency_ms = 1500
    s = start_gateway("--upstream-concurrency", "4")
    c = client(s)
    b = c.batches.create(input_file_id=upload(c, chat_lines(20)).id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    wait_status(c, b.id, ("in_progress",))
    time.sleep(0.5)  # four requests are at the upstream, for 1.5 s
    cancelling = c.batches.cancel(b.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert cancelling.batchyard["items_running"] >= 4  # leased: in flight, and claimed ahead (released now)
    done = wait_status(c, b.id, ("cancelled",), timeout=20)
    assert done.cancelled_at and done.request_counts.completed == 4 and done.request_counts.failed == 16
    out, err = _every_line_once(c, done, 20)
    assert len(out) == 4  # the requests in flight finished and were kept
    assert {line["error"]["code"] for line in err} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError) as caught:
        c.batches.cancel(b.id)
    assert "Cannot cancel a batch with status 'cancelled'" in caught.value.message


def test_lines_that_fail_validation_fail_the_batch(start_gateway: Callable[..., Server]) -> None:
    s = start_gateway()
    c = client(s)
    f = upload(c, chat_lines(3))
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    assert b.status == "validating"
    done = wait_status(c, b.id, ("failed",), timeout=10)
    assert done.failed_at and done.request_counts.total == 0 and done.output_file_id is None
    assert done.errors is not None
    assert [(e.code, e.line, e.param) for e in done.errors.data] == [("mismatched_url", n, "url") for n in (1, 2, 3)]


def test_upload_is_checked_as_openai_checks_it(start_gateway: Callable[..., Server]) -> None:
    s = start_gateway()
    c = client(s)
    good = json.loads(chat_lines(1).decode())
    cases = {
        b"not json\n": ("invalid_json_line", None),
        (json.dumps(good) + "\n" + json.dumps(good) + "\n").encode(): ("duplicate_custom_id", "custom_id"),
        json.dumps({**good, "method": "GET"}).encode(): ("invalid_method", "method"),
        json.dumps({**good, "url": "/v1/images"}).encode(): ("invalid_url", "url"),
        json.dumps({k: v for k, v in good.items() if k != "custom_id"}).encode(): ("missing_required_parameter",
                                                                                  "custom_id"),
        b"\n\n": ("empty_file", None),
    }
    for data, (code, param) in cases.items():
        with pytest.raises(openai.BadRequestError) as caught:
            upload(c, data)
        err = caught.value.body
        assert (err["code"], err["param"], err["type"]) == (code, param, "invalid_request_error"), err  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError) as caught:
        c.batches.create(input_file_id=upload(c, chat_lines(1)).id, endpoint="/v1/chat/completions",
                         completion_window="soon")
    assert caught.value.body["param"] == "completion_window"  # type: ignore[index]


def test_error_file_has_the_upstreams_4xx_responses_and_retries_5xx(start_gateway: Callable[..., Server],
                                                                   upstream: MockUpstream) -> None:
    upstream.behaviour.share_503 = 0.3
    upstream.behaviour.retry_after = 0.2
    s = start_gateway()
    c = client(s)
    lines = chat_lines(30).decode().splitlines()
    bad = json.loads(lines[7])
    del bad["body"]["model"]  # the upstream refuses it with 400: final, in the error file with its response
    lines[7] = json.dumps(bad)
    b = c.batches.create(input_file_id=upload(c, ("\n".join(lines) + "\n").encode()).id,
                         endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_status(c, b.id, timeout=60)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (29, 1)
    _, err = _every_line_once(c, done, 30)
    assert [line["custom_id"] for line in err] == ["req-7"]
    assert err[0]["error"] is None and err[0]["response"]["status_code"] == 400
    assert "model" in err[0]["response"]["body"]["error"]["message"]
    assert upstream.stats.refused_at_random > 0  # 503s happened, and were retried
    assert done.batchyard["upstream"]["throttles"] > 0


def test_paused_batches_are_in_progress_and_tenants_are_apart(start_gateway: Callable[..., Server],
                                                              upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    upstream.behaviour.latency_ms = 200
    monkeypatch.setenv("BATCHYARD_API_KEYS", "acme:key-aaaaaaaaaaaaaaaa,beta:key-bbbbbbbbbbbbbbbb")
    s = start_gateway("--upstream-concurrency", "2")
    a, other = client(s, "key-aaaaaaaaaaaaaaaa"), client(s, "key-bbbbbbbbbbbbbbbb")
    with pytest.raises(openai.AuthenticationError):
        client(s, "wrong").batches.list()
    f = upload(a, chat_lines(20))
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(f.id)
    b = a.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(b.id)
    assert other.batches.list().data == [] and [x.id for x in a.batches.list().data] == [b.id]
    with Client(s.url, api_key="key-aaaaaaaaaaaaaaaa") as bc:
        bc.pause(b.id)
        paused = a.batches.retrieve(b.id)
        assert paused.status == "in_progress" and paused.batchyard["status"] == "paused"
        bc.resume(b.id)
    assert wait_status(a, b.id, timeout=30).status == "completed"
