"""Accuracy of the audio-sync example on synthetic dubs, and its time per pair.

Makes N master/dub pairs with ``examples/audio_sync/make_data.py`` (a shared music-and-effects bed, another
voice, another mix, noise, dropouts: never a shifted copy), runs the ``audio-sync`` processor over them as a
batchyard batch with every method on every pair, and prints, per method, the share of pairs within 10 ms of
the true offset, the median and worst error, and the analysis time per pair; then the same for the
processor's own answer (the best supported estimate: see ``audio_sync_dsp.best``) with the whole item's time
(reading both files and running the four methods) and the batch's wall time per pair.

    python benchmarks/audio_sync_accuracy.py                        # 20 pairs of 45 s at 16 kHz
    python benchmarks/audio_sync_accuracy.py --pairs 50 --hard      # dialogue far above the bed, loud noise
    python benchmarks/audio_sync_accuracy.py --pairs 6 --seconds 30 --rate 8000 --json   # a quick check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import batchyard

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "audio_sync"
TOLERANCE_S = 0.010
METHODS = ["correlation", "onset", "spectral", "mfcc"]


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"audio_sync_bench_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def measure(pairs: int, seconds: float, rate: int, seed: int, hard: bool, parallel: int) -> dict[str, Any]:
    make_data = _module("make_data")
    with tempfile.TemporaryDirectory(prefix="audio-sync-bench-") as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        made = make_data.make(out / "data", pairs, seconds, rate, seed, hard=hard)
        made_s = time.perf_counter() - t0
        truth = {(p.master_file, p.dub_file): p.offset_seconds for p in made}
        items = [{"master_file": m, "dub_file": d} for m, d in truth]
        t0 = time.perf_counter()
        batch = batchyard.run(items, "audio-sync", params={"methods": METHODS}, parallel=parallel,
                              store=str(out / "bench.db"), processors=[str(EXAMPLE / "processors.py")])
        wall = time.perf_counter() - t0
        results = list(batch.results())
    errors: dict[str, list[float]] = {m: [] for m in [*METHODS, "chosen"]}
    seconds_of: dict[str, list[float]] = {m: [] for m in METHODS}
    item_s, failed = [], 0
    for r in results:
        if r.status != "succeeded":
            failed += 1
            continue
        true = truth[(r.payload["master_file"], r.payload["dub_file"])]
        errors["chosen"].append(abs(r.result["offset_seconds"] - true))
        for m, got in r.result["method_results"].items():
            errors[m].append(abs(got["offset_seconds"] - true))
            seconds_of[m].append(got["seconds"])
        item_s.append(r.duration_s or 0.0)
    figures: dict[str, Any] = {"pairs": pairs, "seconds": seconds, "rate": rate, "hard": hard, "failed": failed,
                               "generate_s_per_pair": round(made_s / pairs, 3),
                               "wall_s_per_pair": round(wall / pairs, 3), "parallel": parallel}
    for m, errs in errors.items():
        figures[m] = {
            "within_10ms": round(sum(e <= TOLERANCE_S for e in errs) / pairs, 4),
            "median_error_ms": round(1000 * statistics.median(errs), 2) if errs else None,
            "worst_error_ms": round(1000 * max(errs), 1) if errs else None,
            "s_per_pair": round(statistics.mean(seconds_of.get(m, item_s)), 3) if errs else None,
        }
    return figures


def report(f: dict[str, Any]) -> str:
    kind = "hard mixes (dialogue 8-16 dB over the bed, noise 3-10 dB below)" if f["hard"] else \
        "standard mixes (dialogue 0-10 dB over the bed, noise 12-30 dB below)"
    lines = [f"audio-sync accuracy: {f['pairs']} synthetic pairs of {f['seconds']:g} s at {f['rate']} Hz, {kind}",
             f"{'method':<34} {'within 10 ms':>12} {'median err':>11} {'worst err':>11} {'s/pair':>8}"]
    for m in [*METHODS, "chosen"]:
        row = f[m]
        name = "the processor's answer" if m == "chosen" else m
        median = "-" if row["median_error_ms"] is None else f"{row['median_error_ms']:.2f} ms"
        worst = "-" if row["worst_error_ms"] is None else f"{row['worst_error_ms']:.1f} ms"
        per = "-" if row["s_per_pair"] is None else f"{row['s_per_pair']:.3f}"
        lines.append(f"{name:<34} {row['within_10ms']:>11.1%} {median:>11} {worst:>11} {per:>8}")
    lines.append(f"(analysis at 8 kHz; processor s/pair = reading both files + all four methods; batch wall time "
                 f"{f['wall_s_per_pair']:.3f} s/pair at parallel {f['parallel']}; {f['failed']} items failed)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--rate", type=int, default=16000, help="Sample rate of the generated masters.")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--hard", action="store_true", help="Harsher mixes: see make_data.py --hard.")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="Also print the figures as one JSON line, last.")
    args = ap.parse_args(argv)
    figures = measure(args.pairs, args.seconds, args.rate, args.seed, args.hard, args.parallel)
    print(report(figures))
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
