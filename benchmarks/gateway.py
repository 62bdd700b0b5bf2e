"""The OpenAI-compatible gateway against an upstream's limit and against its capacity, in one run.

A mock OpenAI-compatible upstream (``batchyard.gateway.mock_upstream``, its own process) answers chat
completions after 20 ms. ``batchyard serve --upstream`` (its own process, embedded worker) runs N lines
(default 10,000) submitted with the ``openai`` package:

(a) with a limit of 3,000 requests per minute, which the upstream enforces too (429 beyond): the rate the
    upstream received against the allowed rate (target: at least 95%), and the 429s batchyard caused (target 0);
(b) with no limit: the rate against the upstream's own capacity, measured by a bare asyncio httpx client
    sending the same requests at the same concurrency, straight to the upstream.

Rates are measured at the upstream, from its first request to its last. Usage:

    python benchmarks/gateway.py                  # the run whose figures are in the README
    python benchmarks/gateway.py --n 300 --json   # a quick check (the test suite runs this)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def lines(n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "max_tokens": 60,
                      "messages": [{"role": "system", "content": "Describe the product in one sentence."},
                                   {"role": "user", "content": f"Product {i}: a linen shirt"}]}} for i in range(n)]


class Upstream:
    def __init__(self, latency_ms: float, rpm: float | None, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "batchyard.gateway.mock_upstream", "--port", str(self.port),
                "--latency-ms", str(latency_ms)]
        if rpm:
            args += ["--rpm", str(rpm)]
        self._fh = log.open("wb")
        self.p = subprocess.Popen(args, stdout=self._fh, stderr=subprocess.STDOUT)
        wait_http(self.url + "/_stats")

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_stats", timeout=10).json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.p.terminate()
        self.p.wait(10)
        self._fh.close()


def upstream_rate(stats: dict[str, Any]) -> float:
    """Requests per second the upstream answered 200, from its first such answer to its last."""
    span = (stats["last_ok_at"] or 0) - (stats["first_ok_at"] or 0)
    return (stats["ok"] - 1) / span if span > 0 else 0.0


def run_gateway(n: int, latency_ms: float, rpm: float | None, concurrency: int, work: Path) -> dict[str, Any]:
    up = Upstream(latency_ms, rpm, work / "upstream.log")
    port = free_port()
    store = work / f"store-{rpm or 'free'}.db"
    args = [str(BIN / "batchyard"), "serve", "--port", str(port), "--store", str(store), "--log-level", "warning",
            "--workers", str(concurrency), "--upstream", up.url + "/v1", "--upstream-concurrency", str(concurrency)]
    if rpm:
        args += ["--upstream-rpm", str(rpm)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHYARD_")}
    with (work / "serve.log").open("ab") as log:
        srv = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v1/health")
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=2)
        data = "".join(json.dumps(line) + "\n" for line in lines(n)).encode()
        t0 = time.perf_counter()
        f = client.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch")
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        while b.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.2)
            b = client.batches.retrieve(b.id)
        wall = time.perf_counter() - t0
        stats = up.stats()
        assert b.status == "completed" and b.request_counts.completed == n, b
        return {"requests_per_s": upstream_rate(stats), "wall_s": wall, "refused_by_limit": stats["refused_by_limit"],
                "requests": stats["requests"], "upstream_view": (b.model_extra or {}).get("batchyard", {})
                .get("upstream", {})}
    finally:
        srv.terminate()
        srv.wait(20)
        up.stop()


def run_bare(n: int, latency_ms: float, concurrency: int, work: Path) -> dict[str, Any]:
    """The upstream's own capacity: the same requests straight from an asyncio httpx client."""
    up = Upstream(latency_ms, None, work / "upstream-bare.log")
    try:
        todo = lines(n)

        async def main() -> None:
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            async with httpx.AsyncClient(base_url=up.url, limits=limits, timeout=60) as client:
                it = iter(todo)

                async def lane() -> None:
                    for line in it:
                        r = await client.post("/v1/chat/completions", json=line["body"])
                        r.raise_for_status()

                await asyncio.gather(*(lane() for _ in range(concurrency)))

        t0 = time.perf_counter()
        asyncio.run(main())
        wall = time.perf_counter() - t0
        stats = up.stats()
        return {"requests_per_s": upstream_rate(stats), "wall_s": wall}
    finally:
        up.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="lines per run")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--rpm", type=float, default=3000.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line at the end")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batchyard-gateway-bench-"))
    try:
        limited = run_gateway(args.n, args.latency_ms, args.rpm, args.concurrency, work)
        free = run_gateway(args.n, args.latency_ms, None, args.concurrency, work)
        bare = run_bare(args.n, args.latency_ms, args.concurrency, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    allowed = args.rpm / 60
    figures = {
        "n": args.n, "latency_ms": args.latency_ms, "concurrency": args.concurrency,
        "limited_allowed_per_s": allowed, "limited_per_s": round(limited["requests_per_s"], 2),
        "limited_ratio": round(limited["requests_per_s"] / allowed, 4),
        "limited_429_caused": limited["refused_by_limit"], "limited_wall_s": round(limited["wall_s"], 2),
        "free_per_s": round(free["requests_per_s"], 2), "free_wall_s": round(free["wall_s"], 2),
        "bare_per_s": round(bare["requests_per_s"], 2), "bare_wall_s": round(bare["wall_s"], 2),
        "free_ratio": round(free["requests_per_s"] / bare["requests_per_s"], 4) if bare["requests_per_s"] else None,
    }
    print(f"gateway benchmark: {args.n:,} chat-completion lines, upstream latency {args.latency_ms:g} ms, "
          f"{args.concurrency} in flight at most")
    print("| run | batchyard | baseline | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| (a) limit {args.rpm:,.0f}/min | {figures['limited_per_s']:,.1f} req/s, "
          f"{figures['limited_429_caused']} 429s caused | allowed: {allowed:,.1f} req/s | "
          f"{figures['limited_ratio']:.3f} | >= 0.95, 0 429s |")
    print(f"| (b) no limit | {figures['free_per_s']:,.1f} req/s | upstream capacity (bare httpx client): "
          f"{figures['bare_per_s']:,.1f} req/s | {figures['free_ratio']:.3f} | |")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
