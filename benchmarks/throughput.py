"""Throughput of batchyard against bare baselines, all measured in the same run on the same machine.

(a) N ``noop`` items (default 1,000,000):
    - the whole ``batchyard run`` command as a subprocess (start-up, submit, run, outcomes committed),
    - ``ThreadPoolExecutor(8).map`` of the same function in-process (no durability at all),
    - a bare durable loop on SQLite: insert, claim, record outcome and counters in chunked
      transactions, single-threaded, nothing else: the physical limit of durable recording here.
(b) M ``sleep`` 10 ms items (default 20,000) at parallel 64:
    - batchyard's engine in-process (Python API), and the ``batchyard run`` command as a subprocess,
    - a bare ``ThreadPoolExecutor(64)`` of the same function.

Each figure is the median of ``--repeat`` runs (default 3). Usage:

    python benchmarks/throughput.py                 # the full run whose figures are in the README
    python benchmarks/throughput.py --n 20000 --sleep-n 2000 --repeat 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCHYARD = str(Path(sys.executable).parent / "batchyard")
CHUNK = 4000


def noop(value: str) -> str:
    return value


def sleep_10ms(value: str) -> str:
    time.sleep(0.010)
    return value


def median_rate(n: int, repeat: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    """Run ``fn`` (which returns elapsed seconds) ``repeat`` times; median items/s and all timings."""
    times = [fn() for _ in range(repeat)]
    return n / statistics.median(times), times


def bare_pool(items: list[str], fn: Callable[[str], str], workers: int) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, items):
            pass
    return time.perf_counter() - t


def bare_durable_loop(items: list[str], db: Path) -> float:
    """Insert, claim in chunks, record outcomes and counters in chunks: SQLite's limit for this work."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    t = time.perf_counter()
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode = wal")
    c.execute("PRAGMA synchronous = normal")
    c.execute("CREATE TABLE batch (id INTEGER PRIMARY KEY, pending INT, running INT, done INT)")
    c.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, payload TEXT, status INT DEFAULT 0, result TEXT)")
    c.execute("CREATE INDEX items_pending ON items (id) WHERE status = 0")
    c.execute("BEGIN")
    c.execute("INSERT INTO batch VALUES (1, ?, 0, 0)", (len(items),))
    for k in range(0, len(items), CHUNK):
        c.execute("INSERT INTO items (id, payload) SELECT ?1 + key, value FROM json_each(?2)",
                  (k + 1, json.dumps(items[k:k + CHUNK])))
    c.execute("COMMIT")
    while True:
        c.execute("BEGIN IMMEDIATE")
        lo, hi, n = c.execute("SELECT MIN(id), MAX(id), COUNT(*) FROM (SELECT id FROM items WHERE status = 0 "
                              "ORDER BY id LIMIT ?)", (CHUNK,)).fetchone()
        if not n:
            c.execute("COMMIT")
            break
        c.execute("UPDATE items SET status = 1 WHERE id BETWEEN ? AND ? AND status = 0", (lo, hi))
        rows = json.loads(c.execute("SELECT json_group_array(json_array(id, payload)) FROM items "
                                    "WHERE id BETWEEN ? AND ?", (lo, hi)).fetchone()[0])
        c.execute("UPDATE batch SET pending = pending - ?, running = running + ? WHERE id = 1", (n, n))
        c.execute("COMMIT")
        outcomes = json.dumps([[i, {"value": noop(p)}] for i, p in rows])
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE items SET status = 2, result = j.value -> 1 FROM json_each(?) AS j "
                  "WHERE items.id = (j.value ->> 0) AND items.status = 1", (outcomes,))
        c.execute("UPDATE batch SET running = running - ?, done = done + ? WHERE id = 1", (n, n))
        c.execute("COMMIT")
    c.close()
    return time.perf_counter() - t


def cli_run(input_file: Path, store: Path, *args: str) -> tuple[float, int]:
    """Run ``batchyard run`` as a subprocess; (elapsed seconds, peak RSS in MB)."""
    shutil.rmtree(store.parent, ignore_errors=True)
    t = time.perf_counter()
    proc = subprocess.Popen([BATCHYARD, "run", str(input_file), "--store", str(store), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"batchyard run failed with exit code {code}: {proc.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss // 1024


def engine_run(n: int, store: Path, parallel: int) -> float:
    import batchyard

    shutil.rmtree(store.parent, ignore_errors=True)
    t = time.perf_counter()
    handle = batchyard.run((f"item-{i}" for i in range(n)), "sleep", params={"ms": 10}, parallel=parallel,
                           store=str(store))
    elapsed = time.perf_counter() - t
    info = handle.status()
    assert info.items_succeeded == n, info
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="noop items for (a)")
    ap.add_argument("--sleep-n", type=int, default=20_000, help="sleep items for (b)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="batchyard-bench-"))
    try:
        items = [f"item-{i}" for i in range(args.n)]
        input_file = work / "items.txt"
        input_file.write_text("\n".join(items) + "\n")
        store = work / "store" / "batchyard.db"

        cli_times, rss = [], []
        for _ in range(args.repeat):
            elapsed, peak = cli_run(input_file, store, "--processor", "noop", "--parallel", "8")
            cli_times.append(elapsed)
            rss.append(peak)
        a_cli = args.n / statistics.median(cli_times)
        a_pool, _ = median_rate(args.n, args.repeat, lambda: bare_pool(items, noop, 8))
        a_loop, _ = median_rate(args.n, args.repeat, lambda: bare_durable_loop(items, work / "bare.db"))

        sleep_items = [f"item-{i}" for i in range(args.sleep_n)]
        sleep_file = work / "sleep.txt"
        sleep_file.write_text("\n".join(sleep_items) + "\n")
        b_engine, _ = median_rate(args.sleep_n, args.repeat, lambda: engine_run(args.sleep_n, store, 64))
        b_cli, _ = median_rate(args.sleep_n, args.repeat, lambda: cli_run(
            sleep_file, store, "--processor", "sleep", "--param", "ms=10", "--parallel", "64")[0])
        b_pool, _ = median_rate(args.sleep_n, args.repeat, lambda: bare_pool(sleep_items, sleep_10ms, 64))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "a_n": args.n, "a_batchyard_run_per_s": round(a_cli), "a_threadpool8_per_s": round(a_pool),
        "a_bare_durable_loop_per_s": round(a_loop), "a_ratio_vs_threadpool8": round(a_cli / a_pool, 2),
        "a_ratio_vs_bare_durable_loop": round(a_cli / a_loop, 2), "a_peak_rss_mb": max(rss),
        "b_n": args.sleep_n, "b_engine_per_s": round(b_engine), "b_batchyard_run_per_s": round(b_cli),
        "b_threadpool64_per_s": round(b_pool), "b_ratio_engine_vs_threadpool64": round(b_engine / b_pool, 2),
        "b_ratio_run_vs_threadpool64": round(b_cli / b_pool, 2), "repeat": args.repeat,
    }
    print(f"(a) {args.n:,} noop items, median of {args.repeat}")
    print(f"    batchyard run (subprocess, durable)   {a_cli:>10,.0f} items/s   peak RSS {max(rss)} MB")
    print(f"    ThreadPoolExecutor(8).map (in memory) {a_pool:>10,.0f} items/s   "
          f"ratio {a_cli / a_pool:.2f} (target >= 2.0)")
    print(f"    bare durable loop on SQLite           {a_loop:>10,.0f} items/s   "
          f"ratio {a_cli / a_loop:.2f} (target >= 0.5)")
    print(f"(b) {args.sleep_n:,} sleep-10ms items at parallel 64, median of {args.repeat}")
    print(f"    batchyard engine (Python API)         {b_engine:>10,.0f} items/s   "
          f"ratio {b_engine / b_pool:.2f} (target >= 0.9)")
    print(f"    batchyard run (subprocess)            {b_cli:>10,.0f} items/s   ratio {b_cli / b_pool:.2f}")
    print(f"    ThreadPoolExecutor(64).map            {b_pool:>10,.0f} items/s")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
