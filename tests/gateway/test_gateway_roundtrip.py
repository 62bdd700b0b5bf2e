"""The round trip with the official ``openai`` package: upload, create, poll, download, list, delete."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest
from _gateway_support import chat_lines, client, jsonl, upload, wait_status
from _serve_support import Server

from batchyard import Client
from batchyard.gateway.mock_upstream import MockUpstream


def test_round_trip_with_the_openai_package(start_gateway: Callable[..., Server], upstream: MockUpstream) -> None:
    s = start_gateway()
    c = client(s)
    f = upload(c, chat_lines(40))
    assert (f.object, f.purpose, f.filename, f.bytes) == ("file", "batch", "input.jsonl", len(chat_lines(40)))
    assert c.files.retrieve(f.id).id == f.id
    assert f.id in [x.id for x in c.files.list()]

    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                         metadata={"job": "roundtrip"})
    assert b.status == "validating" and b.request_counts.total == 40 and b.metadata == {"job": "roundtrip"}
    assert b.expires_at - b.created_at == 86400
    done = wait_status(c, b.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (40, 40, 0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    lines = jsonl(c, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(40))
    for line in lines:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("req_mock_")
        assert line["response"]["body"]["choices"][0]["message"]["content"].endswith("finish.")
    usage = done.usage
    assert usage is not None
    assert usage.input_tokens == sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in lines)
    assert usage.output_tokens == sum(line["response"]["body"]["usage"]["completion_tokens"] for line in lines)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens

    # an ordinary batch: /api/v1 and the client see it
    with Client(s.url) as bc:
        info = bc.get_batch(done.id)
        assert info.processor == "openai-request" and info.items_succeeded == 40 and info.status == "completed"
    listed = c.batches.list(limit=10)
    assert [x.id for x in listed.data] == [done.id]

    # files: the output file is listed (purpose batch_output), can be deleted
    out = c.files.retrieve(done.output_file_id)
    assert out.purpose == "batch_output" and out.bytes > 0
    assert c.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError) as caught:
        c.files.retrieve(f.id)
    assert caught.value.body["code"] == "not_found"  # type: ignore[index]
