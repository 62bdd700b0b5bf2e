"""A small product catalogue over HTTP, standing in for the music databases seed 001 looks codes up in.

It serves its own data file (``catalogue.json``: fictional albums) and behaves like a rate-limited public API:

- ``GET /products/<upc>``: the product (200) or 404; beyond ``--rate`` requests in any one-second window, 429
  with ``Retry-After``; and, to exercise clients, a share of requests refused at random: 429 (``--fail-429``)
  or 503 (``--fail-503``), both with ``Retry-After: --retry-after`` seconds.
- ``GET /stats``: what it saw, so a test can check its clients behaved: requests, the most in any one-second
  window (``max_per_second``), refusals for going over the rate (``rate_limited``), injected refusals, and
  retries that came back before the ``Retry-After`` they were given (``early_retries``).
- ``GET /health``.

    python examples/upc_lookup/catalogue.py --port 8765 --fail-429 0.2 --fail-503 0.1 --rate 20

Only the standard library: ``http.server`` with a thread per request.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EARLY_SLACK_S = 0.05  # clocks and scheduling: a retry this much ahead of its Retry-After still counts as on time


class Catalogue:
    """The products, the failure injection and the bookkeeping behind ``/stats`` (thread-safe)."""

    def __init__(self, products: dict[str, dict[str, Any]], rate: float, fail_429: float, fail_503: float,
                 retry_after: float, seed: int | None) -> None:
        self.products = products
        self.rate, self.fail_429, self.fail_503, self.retry_after = rate, fail_429, fail_503, retry_after
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.window: deque[float] = deque()  # arrival times of product requests in the last second
        self.not_before: dict[str, tuple[float, float]] = {}  # upc -> (refused at, may come back at)
        self.stats: dict[str, Any] = {
            "requests": 0, "found": 0, "not_found": 0, "rate_limited": 0, "injected_429": 0, "injected_503": 0,
            "max_per_second": 0, "early_retries": 0, "retries_after_refusal": 0, "min_retry_gap_s": None,
            "rate": rate, "retry_after_s": retry_after,
        }

    def lookup(self, upc: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, body, headers) for one product request."""
        now = time.monotonic()
        with self.lock:
            s = self.stats
            s["requests"] += 1
            self.window.append(now)
            while self.window and self.window[0] <= now - 1.0:
                self.window.popleft()
            s["max_per_second"] = max(s["max_per_second"], len(self.window))
            if upc in self.not_before:
                refused_at, allowed_at = self.not_before.pop(upc)
                s["retries_after_refusal"] += 1
                gap = round(now - refused_at, 3)
                s["min_retry_gap_s"] = gap if s["min_retry_gap_s"] is None else min(s["min_retry_gap_s"], gap)
                if now < allowed_at - EARLY_SLACK_S:
                    s["early_retries"] += 1
            refusal = None
            if len(self.window) > self.rate:
                s["rate_limited"] += 1
                refusal = (429, "rate limit exceeded", 1.0)
            else:
                draw = self.rng.random()
                if draw < self.fail_429:
                    s["injected_429"] += 1
                    refusal = (429, "too many requests (injected)", self.retry_after)
                elif draw < self.fail_429 + self.fail_503:
                    s["injected_503"] += 1
                    refusal = (503, "service unavailable (injected)", self.retry_after)
            if refusal is not None:
                status, message, wait = refusal
                if not wait:  # told nothing: the client's backoff decides, and any retry is on time
                    return status, {"error": message}, {}
                self.not_before[upc] = (now, now + wait)
                return status, {"error": message}, {"Retry-After": f"{wait:g}"}
            product = self.products.get(upc)
            s["found" if product else "not_found"] += 1
        if product is None:
            return 404, {"error": f"no product with UPC {upc}"}, {}
        return 200, product, {}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.stats)


def handler_for(catalogue: Catalogue) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections, as they would with a real API

        def do_GET(self) -> None:
            routes: dict[str, Callable[[], tuple[int, Any, dict[str, str]]]] = {
                "/health": lambda: (200, {"status": "ok", "products": len(catalogue.products)}, {}),
                "/stats": lambda: (200, catalogue.snapshot(), {}),
            }
            if self.path in routes:
                self.reply(*routes[self.path]())
            elif self.path.startswith("/products/"):
                self.reply(*catalogue.lookup(self.path.removeprefix("/products/")))
            else:
                self.reply(404, {"error": f"no route {self.path}"}, {})

        def reply(self, status: int, body: Any, headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: /stats is the record
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data", type=Path, default=HERE / "catalogue.json", help="The products (JSON).")
    parser.add_argument("--rate", type=float, default=20, help="Requests allowed in any one-second window.")
    parser.add_argument("--fail-429", type=float, default=0.0, help="Share of requests refused with 429.")
    parser.add_argument("--fail-503", type=float, default=0.0, help="Share of requests refused with 503.")
    parser.add_argument("--retry-after", type=float, default=1.0,
                        help="Seconds sent in Retry-After with injected refusals (0: no Retry-After).")
    parser.add_argument("--seed", type=int, default=None, help="Seed of the random refusals.")
    args = parser.parse_args()
    products = {p["upc"]: p for p in json.loads(args.data.read_text())["products"]}
    catalogue = Catalogue(products, args.rate, args.fail_429, args.fail_503, args.retry_after, args.seed)
    server = ThreadingHTTPServer((args.host, args.port), handler_for(catalogue))
    print(f"catalogue of {len(products)} products on http://{args.host}:{args.port} (rate {args.rate:g}/s, "
          f"429 {args.fail_429:.0%}, 503 {args.fail_503:.0%})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
