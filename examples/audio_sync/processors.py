"""The ``audio-sync`` processor: the offset of a dub against its master (seed 004's analysis).

    batchyard run examples/audio_sync/data/batch.csv --processor audio-sync \\
        --processors examples/audio_sync/processors.py --parallel 2 --output results.csv

Its parameters are seed 004's CSV columns. Each item reads both files (WAV/FLAC natively, other containers
through ffmpeg), runs the requested methods (see ``audio_sync_dsp``) and reports the answer with the most
confidence behind it (``audio_sync_dsp.best``: the confidences of agreeing methods add up):
``offset_seconds`` (the shift to apply to the dub; negative when it runs late), ``confidence``,
``method_used``, and every method's own answer under ``method_results``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator
from threadpoolctl import threadpool_limits

import batchyard
from batchyard import PermanentError

try:  # loaded by batchyard from this folder (it puts the folder on sys.path), or as a package module
    import audio_sync_dsp as dsp
except ImportError:  # pragma: no cover
    from . import audio_sync_dsp as dsp  # type: ignore[no-redef]

Method = Literal["correlation", "onset", "spectral", "mfcc", "ai"]
AiModel = Literal["wav2vec2", "yamnet", "spectral"]
MIN_SECONDS = 1.0
SILENCE = 1e-4  # below -80 dBFS throughout: digital silence


class AudioSyncParams(BaseModel):
    """Seed 004's CSV columns."""

    master_file: Path = Field(description="The master (in sync) audio or video file.")
    dub_file: Path = Field(description="The dub to measure against the master.")
    methods: list[Method] = Field(default_factory=lambda: list(dsp.METHODS), min_length=1,
                                  description="Methods to run (comma-separated in a CSV); the best supported "
                                              "answer is reported. Default: correlation, onset, spectral, mfcc.")
    ai_model: AiModel | None = Field(None, description="Model for the 'ai' method: none is available here.")
    description: str | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("methods", mode="before")
    @classmethod
    def _normalise(cls, v: Any) -> Any:
        # "MFCC, ai" from a hand-written CSV means ["mfcc", "ai"]
        if isinstance(v, str):
            v = v.split(",")
        if isinstance(v, list):
            return list(dict.fromkeys(m.strip().lower() for m in v if isinstance(m, str) and m.strip()))
        return v


def unavailable_ai(model: str | None) -> str:
    """Why the 'ai' method fails here (it never falls back to another method under the 'ai' name)."""
    chosen = model or "wav2vec2"
    if chosen == "spectral":
        return ("method 'ai' is not available on this server (it has no neural model); for ai_model=spectral "
                "use methods=spectral, the spectral-flux method, which runs here")
    return (f"method 'ai' needs the {chosen} model, which is not available on this server (models are not "
            f"downloaded here); use the methods that run here: {', '.join(dsp.METHODS)}")


def analyse(master_file: Path | str, dub_file: Path | str, methods: list[str]) -> dict[str, Any]:
    """The processor's work, callable without batchyard (the benchmark uses it)."""
    try:
        master, dub = dsp.load(master_file), dsp.load(dub_file)
    except dsp.AudioError as exc:
        raise PermanentError(str(exc)) from None
    for name, x in (("master_file", master), ("dub_file", dub)):
        if len(x) < MIN_SECONDS * dsp.ANALYSIS_RATE:
            raise PermanentError(f"{name}: {len(x) / dsp.ANALYSIS_RATE:.2f} s of audio; at least {MIN_SECONDS:g} s "
                                 "is needed to find an offset")
        if not np.any(np.abs(x) > SILENCE):
            raise PermanentError(f"{name}: the audio is silent; there is nothing to align")
    # Items run side by side, one thread per parallel job: BLAS threads of their own on top would
    # oversubscribe the cores (measured: 3.7x slower at parallel 2 on 2 cores), and the products here are
    # too small to gain from them.
    with threadpool_limits(limits=1, user_api="blas"):
        estimates = [dsp.estimate(m, master, dub) for m in methods]
    chosen = dsp.best(estimates)
    return {
        "offset_seconds": round(chosen.offset_seconds, 4),
        "confidence": round(chosen.confidence, 3),
        "method_used": dsp.LABELS[chosen.method],
        "method": chosen.method,
        "methods_agreeing": sum(abs(e.offset_seconds - chosen.offset_seconds) <= dsp.AGREE_S for e in estimates),
        "method_results": {e.method: e.as_dict() for e in estimates},
        "master_seconds": round(len(master) / dsp.ANALYSIS_RATE, 3),
        "dub_seconds": round(len(dub) / dsp.ANALYSIS_RATE, 3),
    }


@batchyard.processor("audio-sync", params=AudioSyncParams, timeout=900, retry=2,
                     description="Offset of a dub against its master (seed 004): cross-correlation, onset, "
                                 "spectral-flux and MFCC correlation")
def audio_sync(item: batchyard.Item, ctx: batchyard.Context) -> dict[str, Any]:
    p: AudioSyncParams = item.params
    if "ai" in p.methods:  # before reading anything: the answer cannot change
        raise PermanentError(unavailable_ai(p.ai_model))
    return analyse(p.master_file, p.dub_file, list(p.methods))
