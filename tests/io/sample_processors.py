"""Processors shaped like the seeds' workloads, for the input/output tests (loaded with --processors)."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel

from batchyard import PermanentError, processor


class SyncParams(BaseModel):
    """Seed 004: master/dub files required, analysis options optional."""

    master_file: str
    dub_file: str
    methods: list[Literal["mfcc", "onset", "spectral", "ai"]] = ["mfcc"]
    ai_model: Literal["wav2vec2", "yamnet", "spectral"] | None = None
    description: str | None = None
    offset_hint: float | None = None
    channels: int = 2


@processor("sync-analyze", params=SyncParams, retry=1)
def sync_analyze(item, ctx):
    p = item.params
    if "fail" in p.master_file:
        raise PermanentError(f"cannot open {p.master_file}")
    return {"offset_seconds": -15.023 if "ai" in p.methods else 0.5, "confidence": 0.9 if p.ai_model else 0.5,
            "method_used": "=HYPERLINK(\"http://evil\")" if "evil" in p.master_file else ",".join(p.methods),
            "detail": {"channels": p.channels, "frames": 100}}


@processor("upload", retry=1)
def upload(item, ctx):
    """Seed 000: a file in, a reference out."""
    payload = item.payload
    if payload["name"].startswith("bad"):
        raise PermanentError("refused")
    return {"swarm_ref": hashlib.sha256(payload["name"].encode()).hexdigest(), "size": payload["size"]}


@processor("openai-echo", retry=1)
def openai_echo(item, ctx):
    """Seed 002: an OpenAI batch request in, a chat completion out."""
    req = item.payload
    if req["custom_id"].startswith("bad"):
        raise PermanentError("model refused the request")
    text = req["body"]["messages"][-1]["content"]
    return {"status_code": 200, "body": {"object": "chat.completion", "model": req["body"]["model"],
                                         "choices": [{"message": {"role": "assistant", "content": text.upper()}}]}}


@processor("upc", retry=1)
def upc(item, ctx):
    """Seed 001: one UPC code per line."""
    code = item.payload
    if not code.isdigit():
        raise PermanentError(f"not a UPC code: {code!r}")
    return {"upc": code, "price": int(code) % 100 / 10}


class Row(BaseModel):
    upc: str
    qty: int = 1


@processor("qty", params=Row)
def qty(item, ctx):
    return {"total": item.params.qty}
