"""The gateway's pure parts: routing, URLs, input checks across chunk boundaries, token estimates, the mapping."""

from __future__ import annotations

import json

import pytest

from batchyard.core.errors import ConfigError
from batchyard.core.retry import retry_after_seconds
from batchyard.gateway import batches
from batchyard.gateway.config import GatewayConfig
from batchyard.gateway.processor import estimate_tokens, usage_of
from batchyard.server.settings import Settings


def test_routes_pick_an_upstream_per_model_and_keys_stay_out_of_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_KEY", "secret-1")
    cfg = GatewayConfig.from_settings(Settings(upstream="http://main:8080/v1", upstream_routes=[
        "llava*=http://gpu:8000/v1@VLLM_KEY", "text-embedding-3-small=http://emb:9000/v1"]))
    assert cfg.upstream_for("gpt-4o-mini").url == "http://main:8080/v1"
    llava = cfg.upstream_for("llava-1.6")
    assert (llava.url, llava.key_env, llava.key) == ("http://gpu:8000/v1", "VLLM_KEY", "secret-1")
    assert cfg.upstream_for("text-embedding-3-small").url == "http://emb:9000/v1"
    assert "secret-1" not in llava.limit_key and llava.limit_key != cfg.default.limit_key
    assert llava.endpoint("/v1/chat/completions") == "http://gpu:8000/v1/chat/completions"
    assert GatewayConfig.from_settings(Settings(upstream="http://h/")).default.endpoint(
        "/v1/embeddings") == "http://h/v1/embeddings"
    with pytest.raises(ConfigError):
        GatewayConfig.from_settings(Settings(upstream="http://h/v1", upstream_routes=["nourl"]))
    with pytest.raises(ConfigError):
        GatewayConfig.from_settings(Settings())


def test_lines_are_read_whatever_the_chunks_and_checked() -> None:
    good = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
            for i in range(3)]
    data = ("\n".join(json.dumps(g) for g in good) + "\n\n").encode()
    for size in (1, 7, 64, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert [n for n, _ in batches.iter_lines(iter(chunks))] == [1, 2, 3]
    cfg = GatewayConfig.from_settings(Settings(upstream="http://h/v1", gateway_max_lines=2))
    problems = batches.check_file(iter([data]), cfg, first_only=False)
    assert [(p.code, p.line) for p in problems] == [("too_many_requests_in_file", 3)]
    cfg = GatewayConfig.from_settings(Settings(upstream="http://h/v1"))
    assert batches.check_file(iter([data]), cfg, "/v1/embeddings") == []
    assert [p.code for p in batches.check_file(iter([data]), cfg, "/v1/chat/completions", first_only=False)] == \
        ["mismatched_url"] * 3


def test_windows_estimates_usage_and_retry_after() -> None:
    assert batches.window_seconds("24h") == 86400 and batches.window_seconds("1.5s") == 1.5
    with pytest.raises(ValueError):
        batches.window_seconds("0h")
    chat = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 400},
                                                       {"type": "image_url", "image_url": {"url": "data:..."}}]}],
            "max_tokens": 50}
    assert estimate_tokens(chat) == 100 + 85 + 50
    assert estimate_tokens({"input": "y" * 40}) == 10  # embeddings: no output tokens
    assert usage_of({"usage": {"input_tokens": 3, "output_tokens": 4}}) == {
        "input_tokens": 3, "output_tokens": 4, "total_tokens": 7, "cached_tokens": 0, "reasoning_tokens": 0}
    assert retry_after_seconds("2.5") == 2.5 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: at once
