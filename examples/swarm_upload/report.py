"""The seed's manifest for an upload batch: each file's reference, the stamp's utilisation, and what one stamp
for the batch saved over one stamp per file.

    python examples/swarm_upload/report.py [BATCH_ID] --store STORE [--output manifest.json]

Without BATCH_ID, the latest ``swarm-upload`` batch of the store. Files are listed once each (in the batch's
order), as the store recorded them: a file uploaded twice across a crash is still one entry. The node is asked
for its own view of the stamp too, when it can be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import batchyard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from processors import DEFAULT_PRESET, PRESETS, stamp_price  # this folder's module


def cost_comparison(files: int, depth: int, amount: int) -> dict[str, Any]:
    """The seed's comparison: every file buying its own stamp (the default preset, as a one-file upload does)
    against this batch's one stamp, from the price model (``amount * 2**depth`` PLUR a stamp)."""
    each = stamp_price(*PRESETS[DEFAULT_PRESET])
    one = stamp_price(depth, amount)
    per_file = files * each
    return {"unit": "BZZ", "files": files,
            "one_stamp_per_file": {"stamps": files, "stamp_price": each, "total": per_file},
            "one_stamp_for_the_batch": {"stamps": 1, "stamp_price": one, "total": one},
            "saved": per_file - one, "saved_percent": round(100 * (per_file - one) / per_file, 2) if per_file else 0.0}


def manifest(store: Any, batch_id: str | None) -> dict[str, Any]:
    if batch_id is None:
        found = store.list_batches(processor="swarm-upload", limit=1)
        if not found:
            sys.exit("no swarm-upload batch in this store")
        batch_id = found[0].batch_id
    info = store.get_batch(batch_id)
    if info.resource is None or not info.resource.state:
        sys.exit(f"{batch_id} has no stamp yet")
    stamp = info.resource.state
    uploads, failed = [], []
    for it in store.iter_items(batch_id):
        if it.status == "succeeded":
            uploads.append({"filename": it.result["filename"], "swarm_ref": it.result["swarm_ref"],
                            "size": it.result["size"]})
        elif it.status == "failed" and it.error is not None:
            failed.append({"filename": it.payload.get("name"), "error": it.error.message})
    node: dict[str, Any] | None = None
    try:
        r = httpx.get(f"{stamp['bee_url']}/stamps/{stamp['batch_id']}", timeout=5)
        if r.status_code == 200:
            b = r.json()
            node = {"utilization": b["utilization"], "depth": b["depth"], "bucketDepth": b["bucketDepth"],
                    "usable": b["usable"], "utilization_percent":
                    round(100 * b["utilization"] / 2 ** (b["depth"] - b["bucketDepth"]), 4)}
    except httpx.HTTPError:
        pass  # the report still stands on the batch's own accounting
    return {
        "version": "1.0",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "batch_id": batch_id,
        "status": info.status.value,
        "stamp_id": stamp["batch_id"],
        "total_files": len(uploads),
        "uploads": uploads,
        "failed": failed,
        "stamp": {"depth": stamp["depth"], "amount": stamp["amount"], "capacity_chunks": info.resource.capacity,
                  "used_chunks": info.resource.used, "utilization_percent": info.resource.utilization_percent,
                  "node": node},
        "cost_comparison": cost_comparison(len(uploads) + len(failed), stamp["depth"], stamp["amount"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description="Write the seed's upload manifest for a swarm-upload batch.")
    p.add_argument("batch_id", nargs="?")
    p.add_argument("--store", required=True)
    p.add_argument("--output", type=Path, help="write the manifest here (default: stdout)")
    args = p.parse_args()
    store = batchyard.open_store(args.store)
    try:
        m = manifest(store, args.batch_id)
    finally:
        store.close()
    text = json.dumps(m, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return
    args.output.write_text(text)
    c, s = m["cost_comparison"], m["stamp"]
    print(f"{m['batch_id']}: {m['total_files']} files uploaded with stamp {m['stamp_id'][:12]}… (depth {s['depth']}), "
          f"{len(m['failed'])} failed; stamp utilization {s['utilization_percent']:.4g}%")
    print(f"cost: one stamp per file {c['one_stamp_per_file']['total']:.6g} BZZ, one stamp for the batch "
          f"{c['one_stamp_for_the_batch']['total']:.6g} BZZ: {c['saved_percent']:g}% saved")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
