"""Processors for the server tests, loaded by ``batchyard serve --processors``/``worker --processors``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, FilePath

from batchyard import PermanentError, processor


class SyncParams(BaseModel):
    """Seed 004's CSV: master/dub files required, analysis options optional; ``ms`` slows each item."""

    master_file: str
    dub_file: str
    methods: list[Literal["mfcc", "onset", "spectral", "ai"]] = ["mfcc"]
    ai_model: Literal["wav2vec2", "yamnet", "spectral"] | None = None
    description: str | None = None
    tags: list[str] = []
    ms: float = 0


@processor("sync-analyze", params=SyncParams, retry=1, description="Seed 004's audio sync analysis, simulated.")
def sync_analyze(item, ctx):
    p = item.params
    time.sleep(p.ms / 1000)
    if "fail" in p.master_file:
        raise PermanentError(f"cannot open {p.master_file}")
    return {"offset_seconds": -15.023 if "ai" in p.methods else 0.5, "method_used": ",".join(p.methods)}


@processor("slow", retry=1, description="Sleep params.ms; fail permanently while the file params.flag exists.")
def slow(item, ctx):
    params = item.params if isinstance(item.params, dict) else {}
    time.sleep(float(params.get("ms", 0)) / 1000)
    flag = params.get("flag")
    if flag and os.path.exists(flag):
        raise PermanentError(f"flag {flag} is up")
    return {"value": item.payload}


class ProbeParams(BaseModel):
    """Local files by path: on the server, these fields are confined to the --data-root directories."""

    media: Path
    sidecar: FilePath | None = None
    extras: list[Path] = []


@processor("probe", params=ProbeParams, retry=1, description="Size of the file params.media names.")
def probe(item, ctx):
    return {"bytes": item.params.media.stat().st_size}
