"""A small local stand-in for a Bee node (Swarm), speaking the subset of its HTTP API that uploads use.

No Bee node can be reached from everywhere (and a real one needs a funded wallet and a chain), so the example
ships this. It speaks the real node's paths and shapes, so the processor talks to it exactly as it would to a
real node at another URL:

* ``POST /stamps/{amount}/{depth}[?label=...]``: buy a postage stamp -> 201 ``{"batchID", "txHash"}``. Like a real
  node's, it is not usable at once: ``GET /stamps/{id}`` shows ``exists: false``, then ``usable: false``, then
  ``usable: true`` (``--usable-after`` seconds after the purchase).
* ``GET /stamps``, ``GET /stamps/{id}``: ``batchID, utilization, usable, label, depth, amount, bucketDepth,
  blockNumber, immutableFlag, exists, batchTTL``.
* ``POST /bzz[?name=...]`` with ``Swarm-Postage-Batch-Id``: store the body -> 201 ``{"reference"}`` (a 64-hex content
  address). Refused as a real node refuses: 400 without the header, 404 for a stamp it does not know, 422 for one
  not usable yet, 402 ``batch is overissued`` when the stamp is full.
* ``GET /bzz/{reference}``: the content back (with its name). ``GET /health``.

How it differs from Bee, on purpose: a stamp holds ``2**depth`` chunks of 4 KB (Bee's theoretical volume) and fills
as chunks are stamped (Bee spreads chunks over buckets, so a real stamp is "full" before that); ``utilization``
counts the chunks stamped and ``bucketDepth`` is 0, so ``utilization / 2**(depth - bucketDepth)`` is the share
used, as with a real node. A chunk stamped twice by one stamp is stamped once. Stamps cost ``amount * 2**depth``
PLUR, as on the chain; nothing is paid. Everything lives in memory: stopping the node forgets it (a dev node reset).

    python examples/swarm_upload/bee.py serve --port 1633 &
    python examples/swarm_upload/bee.py wait --url http://127.0.0.1:1633
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 4096
BLOCK_SECONDS = 5  # Gnosis chain blocks: what blockNumber counts
FIRST_BLOCK = 30_000_000


@dataclass
class Stamp:
    batch_id: str
    amount: int
    depth: int
    label: str
    bought: float
    chunks: set[str] = field(default_factory=set)

    @property
    def capacity(self) -> int:
        return 2 ** self.depth


class Node:
    """The node's state: stamps and stored content, behind one lock."""

    def __init__(self, usable_after: float, min_depth: int, upload_delay: float) -> None:
        self.usable_after = usable_after
        self.min_depth = min_depth
        self.upload_delay = upload_delay
        self.started = time.time()
        self.stamps: dict[str, Stamp] = {}
        self.content: dict[str, tuple[str, bytes]] = {}
        self.lock = threading.Lock()

    def block(self, at: float) -> int:
        return FIRST_BLOCK + int((at - self.started) / BLOCK_SECONDS)

    def view(self, s: Stamp) -> dict[str, Any]:
        age = time.time() - s.bought
        return {"batchID": s.batch_id, "utilization": len(s.chunks), "usable": age >= self.usable_after,
                "label": s.label, "depth": s.depth, "amount": str(s.amount), "bucketDepth": 0,
                "blockNumber": self.block(s.bought), "immutableFlag": True,
                "exists": age >= self.usable_after / 2, "batchTTL": 86400 * 30, "expired": False}


class Handler(BaseHTTPRequestHandler):
    node: Node
    server_version = "bee-fake/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the example's output is the batch's
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json", headers: dict[str, str] | None
              = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str) -> None:
        self._send(code, {"code": code, "message": message})

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        node = self.node
        if path == "/health":
            self._send(200, {"status": "ok", "version": "2.x-fake", "apiVersion": "7.x"})
        elif path == "/stamps":
            with node.lock:
                self._send(200, {"stamps": [node.view(s) for s in node.stamps.values()]})
        elif path.startswith("/stamps/"):
            with node.lock:
                s = node.stamps.get(path.split("/")[2])
                view = node.view(s) if s else None
            if view is None:
                self._error(404, "issuer does not exist")
            else:
                self._send(200, view)
        elif path.startswith("/bzz/"):
            ref = path.split("/")[2]
            with node.lock:
                found = node.content.get(ref)
            if found is None:
                self._error(404, "Not Found")
            else:
                name, data = found
                self._send(200, data, "application/octet-stream",
                           {"Content-Disposition": f'inline; filename="{name}"', "Swarm-Feed-Index": ""})
        else:
            self._error(404, "Not Found")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path.rstrip("/"), parse_qs(parts.query)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path.startswith("/stamps/"):
            self._buy(path, query)
        elif path == "/bzz":
            self._upload(body, unquote(query.get("name", ["upload"])[0]))
        else:
            self._error(404, "Not Found")

    def _buy(self, path: str, query: dict[str, list[str]]) -> None:
        try:
            _, _, amount_s, depth_s = path.split("/")
            amount, depth = int(amount_s), int(depth_s)
        except ValueError:
            self._error(400, "invalid path params: amount and depth must be integers")
            return
        if depth < self.node.min_depth or depth > 255 or amount <= 0:
            self._error(400, f"invalid path params: depth must be at least {self.node.min_depth}, amount positive")
            return
        stamp = Stamp(secrets.token_hex(32), amount, depth, query.get("label", [""])[0], time.time())
        with self.node.lock:
            self.node.stamps[stamp.batch_id] = stamp
        self._send(201, {"batchID": stamp.batch_id, "txHash": "0x" + secrets.token_hex(32)})

    def _upload(self, data: bytes, name: str) -> None:
        node = self.node
        batch_id = (self.headers.get("Swarm-Postage-Batch-Id") or "").lower()
        if not batch_id:
            self._error(400, "missing header: swarm-postage-batch-id")
            return
        if node.upload_delay:
            time.sleep(node.upload_delay)  # a network's round trips, so that a batch takes a while
        # Content addresses: each 4 KB chunk by its content, and the file (with its name, as a bzz manifest
        # entry would) by both; the reference is stamped too.
        pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        addresses = {hashlib.sha256(p).hexdigest() for p in pieces}
        reference = hashlib.sha256(b"bzz\0" + name.encode() + b"\0" + data).hexdigest()
        addresses.add(reference)
        with node.lock:
            s = node.stamps.get(batch_id)
            if s is None:
                self._error(404, "batch with id not found")
                return
            if time.time() - s.bought < node.usable_after:
                self._error(422, "stamp not usable")
                return
            new = addresses - s.chunks
            if len(s.chunks) + len(new) > s.capacity:
                self._error(402, "batch is overissued")
                return
            s.chunks |= new
            node.content[reference] = (name, data)
        self._send(201, {"reference": reference}, headers={"Swarm-Tag": str(secrets.randbelow(2**31))})


def serve(args: argparse.Namespace) -> None:
    Handler.node = Node(args.usable_after, args.min_depth, args.upload_delay)
    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    httpd.daemon_threads = True
    print(f"fake Bee node on http://{args.host}:{httpd.server_address[1]} (stamps usable after "
          f"{args.usable_after:g}s, min depth {args.min_depth})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        httpd.serve_forever()


def wait(args: argparse.Namespace) -> None:
    """Until the node answers /health (for scripts that start it in the background)."""
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            with urllib.request.urlopen(args.url.rstrip("/") + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"no Bee node answered at {args.url} within {args.timeout:g}s")
        time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the node")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=1633)
    s.add_argument("--usable-after", type=float, default=2.0, help="seconds before a bought stamp is usable")
    s.add_argument("--min-depth", type=int, default=17, help="smallest depth sold (17 on Swarm's mainnet; a dev "
                                                             "network may sell smaller stamps)")
    s.add_argument("--upload-delay", type=float, default=0.0, help="seconds each upload takes")
    w = sub.add_parser("wait", help="wait until a node answers")
    w.add_argument("--url", default="http://127.0.0.1:1633")
    w.add_argument("--timeout", type=float, default=15.0)
    args = p.parse_args()
    serve(args) if args.command == "serve" else wait(args)


if __name__ == "__main__":
    main()
