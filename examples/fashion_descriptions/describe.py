"""Seed 002's pipeline through any OpenAI Batch API: product descriptions for a catalogue, at the batch price.

From a CSV of products (id, title, category, image_url) build one chat-completion request per product (a system
prompt, the title and category, the image as an ``image_url`` part), upload them as a batch input file with the
official ``openai`` package, create the batch, poll it, download its output and error files, and write a CSV
joining each product to its description, with the cost against sending the same requests one by one.

The same script runs against batchyard's gateway (``batchyard serve --upstream URL``: any OpenAI-compatible
server, with its rate limits kept) or against OpenAI itself (``--base-url https://api.openai.com/v1``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from openai import OpenAI

from batchyard.gateway.pricing import PriceTable

SYSTEM_PROMPT = ("You write product descriptions for a fashion shop. In one or two sentences, describe the item in "
                 "the image: cut, material, colour and the occasions it suits. No prices, no superlatives.")


def requests_for(products: list[dict[str, str]], model: str, max_tokens: int, detail: str) -> bytes:
    lines = []
    for p in products:
        lines.append({"custom_id": p["id"], "method": "POST", "url": "/v1/chat/completions", "body": {
            "model": model, "max_tokens": max_tokens,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": [
                    {"type": "text", "text": f"Category: {p['category']}. Product: {p['title']}"},
                    {"type": "image_url", "image_url": {"url": p["image_url"], "detail": detail}}]}]}})
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def download(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("products", type=Path, help="CSV with id, title, category, image_url")
    ap.add_argument("--out", type=Path, default=Path("descriptions.csv"))
    ap.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"))
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "none"),
                    help="a batchyard API key, or the provider's (default $OPENAI_API_KEY)")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--max-tokens", type=int, default=150)
    ap.add_argument("--detail", choices=("low", "high", "auto"), default="low")
    ap.add_argument("--window", default="24h", help="completion window (OpenAI: 24h)")
    ap.add_argument("--poll", type=float, default=30.0, help="seconds between status checks (the seed: 30)")
    args = ap.parse_args()

    with args.products.open(newline="") as fh:
        products = list(csv.DictReader(fh))
    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    data = requests_for(products, args.model, args.max_tokens, args.detail)
    f = client.files.create(file=(f"{args.products.stem}.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                  completion_window=args.window, metadata={"job": "fashion descriptions"})
    print(f"batch {batch.id}: {len(products)} requests ({len(data):,} bytes), {batch.status}", flush=True)
    started = time.monotonic()
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(args.poll)
        batch = client.batches.retrieve(batch.id)
        counts = batch.request_counts
        done = f"{counts.completed:,}/{counts.total:,}" if counts else "?"
        print(f"  {batch.status}: completed {done}", flush=True)
    if batch.status == "failed":
        for e in (batch.errors.data if batch.errors else []):
            print(f"  line {e.line}: {e.code}: {e.message}", file=sys.stderr)
        return 1

    by_id: dict[str, dict[str, Any]] = {}
    for line in download(client, batch.output_file_id) + download(client, batch.error_file_id):
        by_id[line["custom_id"]] = line
    prices = PriceTable().get(args.model)
    tokens_in = tokens_out = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "title", "category", "image_url", "description", "input_tokens", "output_tokens", "error"])
        for p in products:
            line = by_id.get(p["id"], {})
            response = line.get("response") or {}
            body = response.get("body") or {}
            usage = body.get("usage") or {}
            ok = response.get("status_code") == 200
            text = body["choices"][0]["message"]["content"] if ok else ""
            error = "" if ok else (line.get("error") or {}).get("message") or \
                (body.get("error") or {}).get("message") or "no result"
            tokens_in += usage.get("prompt_tokens", 0)
            tokens_out += usage.get("completion_tokens", 0)
            w.writerow([p["id"], p["title"], p["category"], p["image_url"][:200], text,
                        usage.get("prompt_tokens", ""), usage.get("completion_tokens", ""), error])

    counts = batch.request_counts
    print(f"{batch.status} in {time.monotonic() - started:.1f}s: {counts.completed:,} described, "
          f"{counts.failed:,} failed -> {args.out}")
    # Seed 002's comparison: the same requests one by one, and through the batch API (its discount).
    if prices is not None and counts.completed:
        sync, cost = prices.sync_cost(tokens_in, tokens_out), prices.batch_cost(tokens_in, tokens_out)
        per = counts.completed
        print(f"tokens: {tokens_in:,} in, {tokens_out:,} out ({args.model})")
        print("| Method | Cost per image | Total cost | Savings |")
        print("|---|---|---|---|")
        print(f"| Individual API | ${sync / per:.6f} | ${sync:.4f} | - |")
        print(f"| Batch API | ${cost / per:.6f} | ${cost:.4f} | {(1 - cost / sync) * 100:.1f}% |" if sync else
              "| Batch API | $0 | $0 | - |")
    own = (batch.model_extra or {}).get("batchyard")
    if own:  # batchyard's own account of the batch, from the gateway's price table
        c = own["cost"]
        print(f"batchyard: cost {c['batch']:.6f} {c['unit']} (synchronously {c['synchronous']:.6f}, saved "
              f"{c['saved']:.6f}); upstream limit {own['upstream'].get('requests_per_minute')} requests/min, "
              f"{own['upstream'].get('throttles', 0)} throttling events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
