#!/usr/bin/env python3
"""Compare measured offsets with the true ones: one line per pair, then the share within the tolerance.

RESULTS is any results file of the example: batchyard's JSON or CSV (``batchyard run --output``,
``batchyard results``) or seed 004's JSON or CSV (``.../results``, ``.../results?export_format=csv``).
TRUTH is the ``truth.csv`` that ``make_data.py`` wrote. Exit status 1 when fewer than ``--min-share`` of the
pairs are within ``--tolerance-ms``, so scripts can rely on it.

    python examples/audio_sync/check_offsets.py results.csv .batchyard/audio_sync/data/truth.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any


def measured(path: Path) -> dict[str, tuple[float | None, str]]:
    """dub file -> (offset_seconds or None, status or error) from any of the four result shapes."""
    out: dict[str, tuple[float | None, str]] = {}
    if path.suffix == ".json":
        for r in json.loads(path.read_text())["results"]:
            files = r.get("input") or r  # batchyard's JSON nests the row under "input"; the seed's does not
            result: dict[str, Any] = r.get("result") or {}
            error = r.get("error")
            note = error if isinstance(error, str) else (error or {}).get("message") or r.get("status", "")
            out[files["dub_file"]] = (result.get("offset_seconds"), note)
    else:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                cell = row.get("result.offset_seconds", row.get("offset_seconds")) or ""
                note = row.get("error_message") or row.get("error") or row.get("status", "")
                out[row["dub_file"]] = (float(cell) if cell else None, note)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("truth", type=Path)
    ap.add_argument("--tolerance-ms", type=float, default=10.0)
    ap.add_argument("--min-share", type=float, default=0.95, help="Exit 1 below this share within tolerance.")
    args = ap.parse_args(argv)
    got = measured(args.results)
    with open(args.truth, newline="") as fh:
        truth = {row["dub_file"]: float(row["offset_seconds"]) for row in csv.DictReader(fh)}
    within = 0
    for dub, true in truth.items():
        offset, note = got.get(dub, (None, "not in the results"))
        if offset is None:
            print(f"{Path(dub).name:<16} true {true:+9.3f} s   no offset: {note}")
            continue
        error_ms = 1000 * (offset - true)
        ok = abs(error_ms) <= args.tolerance_ms
        within += ok
        print(f"{Path(dub).name:<16} true {true:+9.3f} s   measured {offset:+10.4f} s   error {error_ms:+8.2f} ms"
              + ("" if ok else "   MISSED"))
    share = within / len(truth) if truth else 0.0
    print(f"{within}/{len(truth)} pairs within {args.tolerance_ms:g} ms ({share:.0%})")
    return 0 if share >= args.min_share else 1


if __name__ == "__main__":
    sys.exit(main())
