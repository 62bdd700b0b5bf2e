#!/usr/bin/env python3
"""A webhook endpoint for the README's walk-through: checks batchyard's signature, keeps each event.

batchyard signs every webhook per Standard Webhooks with ``BATCHYARD_WEBHOOK_SECRET`` (or a secret its store
generated: ``batchyard webhook-secret --store ...``). This receiver verifies each POST with the same secret,
answers 401 to one that does not verify, and appends the verified events, one JSON object a line, to ``--out``.

    python examples/audio_sync/webhook_receiver.py --port 8001 --out .batchyard/audio_sync/webhooks.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--out", type=Path, required=True, help="JSON-lines file the events are appended to.")
    ap.add_argument("--secret", default=os.environ.get("BATCHYARD_WEBHOOK_SECRET"),
                    help="Signing secret (whsec_...); default $BATCHYARD_WEBHOOK_SECRET.")
    args = ap.parse_args(argv)
    if not args.secret:
        ap.error("give --secret or set BATCHYARD_WEBHOOK_SECRET (the server's signing secret)")
    verifier = Webhook(args.secret)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                event = verifier.verify(body, {k.lower(): v for k, v in self.headers.items()})
            except WebhookVerificationError as exc:
                print(f"refused a webhook that does not verify: {exc}", file=sys.stderr)
                self.answer(401)
                return
            with open(args.out, "a") as fh:
                fh.write(json.dumps({"path": self.path, "id": self.headers["webhook-id"], **event}) + "\n")
            self.answer(204)

        def answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # quiet: the events file is the record
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"receiving webhooks on http://127.0.0.1:{args.port}/ into {args.out}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it quietly
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
