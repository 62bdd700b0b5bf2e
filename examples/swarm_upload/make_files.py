"""Sample files for the upload example: log files like the seed's ``sample_files/log_001.txt``...

    python examples/swarm_upload/make_files.py FOLDER [--count 25] [--size 6000]

Each file holds about ``--size`` bytes of log lines, different in every file (content addresses differ), and the
same on every run (seeded), so that running the same command again finds the same batch to resume.
"""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
EVENTS = ("request served", "cache miss", "upload queued", "stamp checked", "retrying connection", "job done",
          "disk flushed", "user signed in", "config reloaded", "rotation started")


def log_text(n: int, size: int) -> str:
    rng = random.Random(n)
    at = datetime(2025, 1, 8, tzinfo=UTC) + timedelta(hours=n)
    lines, total = [], 0
    while total < size:
        at += timedelta(seconds=rng.randint(1, 90))
        line = (f"{at:%Y-%m-%dT%H:%M:%SZ} {rng.choice(LEVELS):5} [svc-{rng.randint(1, 9)}] "
                f"{rng.choice(EVENTS)} id={rng.getrandbits(48):012x} ms={rng.randint(1, 900)}\n")
        lines.append(line)
        total += len(line)
    return "".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description="Write sample log files to upload.")
    p.add_argument("folder", type=Path)
    p.add_argument("--count", type=int, default=25)
    p.add_argument("--size", type=int, default=6000, help="about this many bytes per file")
    args = p.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, args.count + 1):
        (args.folder / f"log_{n:03d}.txt").write_text(log_text(n, args.size))
    print(f"wrote {args.count} files of about {args.size:,} bytes to {args.folder}")


if __name__ == "__main__":
    main()
