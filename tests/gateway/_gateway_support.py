"""What the gateway's tests share: the openai client on a server, input lines, polling, downloads."""

from __future__ import annotations

import io
import json
import time
from typing import Any

from _serve_support import Server
from openai import OpenAI

FINAL = ("completed", "failed", "expired", "cancelled")


def client(server: Server, key: str = "none") -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def chat_lines(n: int, prefix: str = "req", model: str = "gpt-4o-mini", **body: Any) -> bytes:
    lines = [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "messages": [{"role": "system", "content": "Describe the product."},
                                                    {"role": "user", "content": f"Product {i}: a linen shirt"}],
                       **body}} for i in range(n)]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def upload(c: OpenAI, data: bytes, name: str = "input.jsonl") -> Any:
    return c.files.create(file=(name, io.BytesIO(data)), purpose="batch")


def wait_status(c: OpenAI, batch_id: str, statuses: tuple[str, ...] = FINAL, timeout: float = 60,
                seen: list[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        b = c.batches.retrieve(batch_id)
        if seen is not None and (not seen or seen[-1] != b.status):
            seen.append(b.status)
        if b.status in statuses:
            return b
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {b.status} after {timeout}s: {b}")
        time.sleep(0.1)


def jsonl(c: OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in c.files.content(file_id).text.splitlines() if line.strip()]
