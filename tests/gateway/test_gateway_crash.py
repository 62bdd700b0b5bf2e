"""``kill -9`` of the server mid-batch: a restart resumes it, every line ends once in the output, and no request
whose response was recorded is sent again."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from _gateway_support import chat_lines, client, jsonl, upload, wait_status
from _serve_support import Proc, Server, wait_for

from batchyard import Client
from batchyard.gateway.mock_upstream import MockUpstream


def test_kill_9_then_restart_sends_nothing_twice_that_was_recorded(start_gateway: Callable[..., Server],
                                                                  upstream: MockUpstream) -> None:
    upstream.behaviour.latency_ms = 100
    extra = ("--upstream-rpm", "1200", "--upstream-concurrency", "8")
    first = start_gateway(*extra)
    c = client(first)
    b = c.batches.create(input_file_id=upload(c, chat_lines(200)).id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    with Client(first.url) as bc:
        wait_for(lambda: bc.get_batch(b.id).items_succeeded >= 60, timeout=30)
    first.p.send_signal(signal.SIGKILL)
    first.p.wait(10)
    sent_before = len(upstream.records())

    second = start_gateway(*extra, store=first.store)  # recovers the dead worker's items at start-up
    c2 = client(second)
    done = wait_status(c2, b.id, timeout=60)
    assert done.status == "completed" and done.request_counts.completed == 200
    lines = jsonl(c2, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(200))

    sends: dict[str, list[tuple[float, int, str]]] = {}
    for r in upstream.records():
        assert r.key is not None and r.key.startswith(f"{b.id}:")
        sends.setdefault(r.key.split(":", 1)[1], []).append((r.at, r.status, r.request_id))
    recorded = {line["custom_id"]: line["response"]["request_id"] for line in lines}
    for custom_id, history in sends.items():
        rids = [rid for _, _, rid in history]
        # The response kept in the output is the last request sent for that line: nothing after it.
        assert rids[-1] == recorded[custom_id], (custom_id, history)
    resent = [cid for cid, history in sends.items() if len(history) > 1]
    assert len(resent) <= 8 + 8, resent  # at most what was in flight, or answered but not yet recorded, at the kill
    assert sent_before < len(upstream.records()) <= 200 + len(resent)


def test_a_separate_worker_takes_the_upstream_from_the_environment(start_gateway: Callable[..., Server],
                                                                   upstream: MockUpstream, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    upstream.behaviour.latency_ms = 20
    upstream.behaviour.rpm = 1200
    s = start_gateway("--workers", "0", "--upstream-rpm", "1200")  # API only
    c = client(s)
    b = c.batches.create(input_file_id=upload(c, chat_lines(60)).id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    for name, value in {"BATCHYARD_UPSTREAM": upstream.url, "BATCHYARD_UPSTREAM_RPM": "1200",
                        "BATCHYARD_STORE": str(s.store)}.items():
        monkeypatch.setenv(name, value)  # the worker process's environment
    w = Proc(["worker", "--processors", "batchyard.gateway.processor", "--concurrency", "16"], tmp_path / "w.log")
    try:
        done = wait_status(c, b.id, timeout=60)
    finally:
        w.stop()
    assert done.status == "completed" and done.request_counts.completed == 60, w.output()
    assert upstream.stats.refused_by_limit == 0
    assert done.batchyard["upstream"]["sent_paced"] >= 60  # paced through the server's store
