"""A local OpenAI-compatible upstream, for the gateway's tests, its example and its benchmark (and to try the
gateway with no provider at all): ``python -m batchyard.gateway.mock_upstream --port 8081``.

It answers ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` and ``/v1/responses`` with
deterministic answers derived from the request and real ``usage`` counts of them (a token is a word or a
punctuation mark; an image part counts 85), after a configurable latency. It can refuse: its own rate limit
(requests per minute, a token bucket holding one second of them) answers 429 with ``Retry-After``, and a
share of requests can get 429 or 503 at random (seeded). It keeps, for tests to assert on, every request it
answered (time, ``Idempotency-Key``, status, request id) and the requests per second it received.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_TOKEN = re.compile(r"\w+|[^\w\s]")
IMAGE_TOKENS = 85
WORDS = ("relaxed", "tailored", "soft", "structured", "lightweight", "breathable", "classic", "modern", "cropped",
         "oversized", "ribbed", "pleated", "textured", "minimal", "vintage", "everyday", "layered", "polished")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


@dataclass
class Behaviour:
    """What the upstream does; every field can be changed while it runs (``POST /_control``)."""

    latency_ms: float = 0.0
    rpm: float | None = None          # its own limit: over it, 429 with Retry-After
    share_429: float = 0.0            # random refusals
    share_503: float = 0.0
    retry_after: float = 1.0          # seconds, sent with every 429 and 503
    api_key: str | None = None        # when set, requests need Authorization: Bearer <it>
    seed: int = 0


@dataclass
class Record:
    at: float
    key: str | None
    status: int
    request_id: str


@dataclass
class Stats:
    per_second: Counter[int] = field(default_factory=Counter)      # received, by whole second
    ok_per_second: Counter[int] = field(default_factory=Counter)   # answered 200, by whole second
    refused_by_limit: int = 0                                      # 429s from its own rate limit
    refused_at_random: int = 0
    records: list[Record] = field(default_factory=list)


class MockUpstream:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.stats = Stats()
        self._rng = random.Random(self.behaviour.seed)
        self._bucket = (0.0, 0.0)  # (tokens, updated)
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/responses", self._responses, methods=["POST"]),
            Route("/_control", self._control, methods=["POST"]),
            Route("/_stats", self._stats, methods=["GET"]),
        ])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- running -------------------------------------------------------------------------------

    def start(self, port: int = 0) -> MockUpstream:
        """Serve on 127.0.0.1 in a thread of this process; returns once it answers."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_keep_alive=30,
                                backlog=2048)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="mock-upstream")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the mock upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> MockUpstream:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- what tests read -------------------------------------------------------------------------

    def rate_series(self, ok_only: bool = False) -> list[tuple[int, int]]:
        """(second, requests) for every second from the first request to the last, gaps as 0."""
        with self._lock:
            counts = dict(self.stats.ok_per_second if ok_only else self.stats.per_second)
        if not counts:
            return []
        lo, hi = min(counts), max(counts)
        return [(s, counts.get(s, 0)) for s in range(lo, hi + 1)]

    def records(self) -> list[Record]:
        with self._lock:
            return list(self.stats.records)

    def reset(self) -> None:
        with self._lock:
            self.stats = Stats()

    # -- serving ---------------------------------------------------------------------------------

    async def _gate(self, request: Request) -> tuple[JSONResponse | None, dict[str, Any], str]:
        """Count the request, then refuse it (auth, limit, random) or let it through after the latency."""
        b = self.behaviour
        now = time.time()
        rid = f"req_mock_{hashlib.sha256(f'{now}:{id(request)}:{self._rng.random()}'.encode()).hexdigest()[:20]}"
        key = request.headers.get("idempotency-key")
        with self._lock:
            self.stats.per_second[int(now)] += 1
        status, message = 200, ""
        if b.api_key and request.headers.get("authorization") != f"Bearer {b.api_key}":
            status, message = 401, "Incorrect API key provided."
        elif b.rpm and not self._take(now, b.rpm):
            status, message = 429, "Rate limit reached for requests per minute."
            with self._lock:
                self.stats.refused_by_limit += 1
        else:
            draw = self._rng.random()
            if draw < b.share_429:
                status, message = 429, "Rate limit reached (random share)."
            elif draw < b.share_429 + b.share_503:
                status, message = 503, "The server is overloaded (random share)."
            if status != 200:
                with self._lock:
                    self.stats.refused_at_random += 1
        try:
            body = await request.json()
        except ValueError:
            body = None
            if status == 200:
                status, message = 400, "We could not parse the JSON body of your request."
        if status == 200 and b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        if status == 200 and not isinstance(body, dict):
            status, message = 400, "The body must be a JSON object."
        elif status == 200 and not body.get("model"):
            status, message = 400, "you must provide a model parameter"
        with self._lock:
            self.stats.records.append(Record(time.time(), key, status, rid))
            if status == 200:
                self.stats.ok_per_second[int(time.time())] += 1
        if status != 200:
            headers = {"x-request-id": rid}
            if status in (429, 503):
                headers["retry-after"] = f"{b.retry_after:g}"
            kind = {401: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}.get(
                status, "invalid_request_error")
            return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}},
                                status_code=status, headers=headers), {}, rid
        return None, body, rid

    def _take(self, now: float, rpm: float) -> bool:
        rate = rpm / 60.0
        burst = max(1.0, rate)  # one second of requests at once, as providers allow short bursts
        with self._lock:
            tokens, updated = self._bucket
            tokens = burst if updated == 0 else min(burst, tokens + (now - updated) * rate)
            ok = tokens >= 1.0
            self._bucket = (tokens - 1.0 if ok else tokens, now)
        return ok

    @staticmethod
    def _texts(value: Any) -> tuple[list[str], int]:
        """The texts of messages or input, and the number of image parts."""
        texts: list[str] = []
        images = 0

        def walk(v: Any) -> None:
            nonlocal images
            if isinstance(v, str):
                texts.append(v)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
            elif isinstance(v, dict):
                if v.get("type") in ("image_url", "input_image"):
                    images += 1
                    return
                for k in ("content", "text"):
                    if k in v:
                        walk(v[k])

        walk(value)
        return texts, images

    @staticmethod
    def answer_for(texts: list[str], model: str) -> str:
        """A short description, the same for the same request."""
        digest = hashlib.sha256("\n".join(texts).encode() + model.encode()).digest()
        subject = texts[-1] if texts else "the item"
        subject = subject.split(":")[-1].strip().rstrip(".")[:80] or "the item"
        words = [WORDS[b % len(WORDS)] for b in digest[:3]]
        return f"A {words[0]}, {words[1]} piece: {subject}, with a {words[2]} finish."

    def _headers(self, rid: str) -> dict[str, str]:
        return {"x-request-id": rid}

    async def _chat(self, request: Request) -> JSONResponse:
        refused, body, rid = await self._gate(request)
        if refused:
            return refused
        model = str(body.get("model") or "mock")
        texts, images = self._texts(body.get("messages"))
        answer = self.answer_for(texts, model)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0:
            answer = " ".join(answer.split()[:limit])
        prompt = sum(count_tokens(t) for t in texts) + images * IMAGE_TOKENS
        completion = count_tokens(answer)
        return JSONResponse({
            "id": f"chatcmpl-{rid[9:]}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}}}, headers=self._headers(rid))

    async def _completions(self, request: Request) -> JSONResponse:
        refused, body, rid = await self._gate(request)
        if refused:
            return refused
        model = str(body.get("model") or "mock")
        texts, _ = self._texts(body.get("prompt"))
        answer = self.answer_for(texts, model)
        prompt, completion = sum(count_tokens(t) for t in texts), count_tokens(answer)
        return JSONResponse({
            "id": f"cmpl-{rid[9:]}", "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": answer, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}},
            headers=self._headers(rid))

    async def _embeddings(self, request: Request) -> JSONResponse:
        refused, body, rid = await self._gate(request)
        if refused:
            return refused
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data, tokens = [], 0
        for i, text in enumerate(items):
            digest = hashlib.sha256(str(text).encode()).digest()
            data.append({"object": "embedding", "index": i, "embedding": [round(b / 255 - 0.5, 4) for b in digest[:8]]})
            tokens += count_tokens(str(text))
        return JSONResponse({"object": "list", "data": data, "model": body.get("model") or "mock",
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, headers=self._headers(rid))

    async def _responses(self, request: Request) -> JSONResponse:
        refused, body, rid = await self._gate(request)
        if refused:
            return refused
        model = str(body.get("model") or "mock")
        texts, images = self._texts(body.get("input"))
        answer = self.answer_for(texts, model)
        prompt, completion = sum(count_tokens(t) for t in texts) + images * IMAGE_TOKENS, count_tokens(answer)
        return JSONResponse({
            "id": f"resp_{rid[9:]}", "object": "response", "created_at": int(time.time()), "model": model,
            "status": "completed", "output": [{"type": "message", "role": "assistant",
                                               "content": [{"type": "output_text", "text": answer}]}],
            "usage": {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}},
            headers=self._headers(rid))

    async def _control(self, request: Request) -> JSONResponse:
        changes = await request.json()
        for k, v in changes.items():
            if k == "reset":
                self.reset()
            elif hasattr(self.behaviour, k):
                setattr(self.behaviour, k, v)
        return JSONResponse(asdict(self.behaviour))

    async def _stats(self, request: Request) -> JSONResponse:
        ok = [r.at for r in self.records() if r.status == 200]
        return JSONResponse({"per_second": self.rate_series(), "ok_per_second": self.rate_series(ok_only=True),
                             "refused_by_limit": self.stats.refused_by_limit,
                             "refused_at_random": self.stats.refused_at_random, "requests": len(self.records()),
                             "ok": len(ok), "first_ok_at": min(ok, default=None), "last_ok_at": max(ok, default=None)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rpm", type=float, default=None, help="its own rate limit (429 beyond)")
    parser.add_argument("--share-429", type=float, default=0.0)
    parser.add_argument("--share-503", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    up = MockUpstream(Behaviour(latency_ms=args.latency_ms, rpm=args.rpm, share_429=args.share_429,
                                share_503=args.share_503, api_key=args.api_key))
    print(f"mock upstream on http://127.0.0.1:{args.port}/v1", flush=True)
    uvicorn.run(up.app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
