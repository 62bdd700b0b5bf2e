"""Scale-out: batchyard worker processes on PostgreSQL (1, 2, 4) and on SQLite (1), against bare baselines,
everything measured in one run on the same machine.

Workloads, each run by separate ``batchyard worker`` processes started before the batch (so start-up is not
counted) and timed by the store, from the batch's start to its completion:

- no-op: ``--n`` items (default 100,000) of the built-in ``noop``;
- 10 ms: ``--sleep-n`` items per worker (default 20,000) of the built-in ``sleep``, 64 in flight per worker.

Baselines, measured in the same run:

- the bare ceiling for the no-op workload: a plain psycopg loop in 2 processes that claims items with
  ``FOR UPDATE SKIP LOCKED`` and records outcomes, each with its counter update, in the same transaction
  shapes and at the chunk size batchyard's worker claims no-op items with (``--bare-chunk``; also at 100,
  the chunk of earlier measurements, for reference);
- ``ThreadPoolExecutor(64)`` of the same 10 ms function, in memory, for the 10 ms workload;
- the idle fleet: 4 idle ``batchyard worker`` processes, and the statements per second they send (counted in
  their psycopg) and transactions per second they cost the database (``pg_stat_database.xact_commit``).

The server is ``--pg`` (default ``$BATCHYARD_TEST_PG`` or ``postgresql://postgres@127.0.0.1:5432/postgres``); the
benchmark creates a database of its own there and drops it at the end. Usage:

    python benchmarks/scaleout.py                      # the full run whose figures are in the README
    python benchmarks/scaleout.py --n 20000 --sleep-n 3000 --workers 1,2 --idle-seconds 5   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

from batchyard.core import defaults
from batchyard.core.models import BatchSpec
from batchyard.core.scheduling import buffer_target, refill_at
from batchyard.core.store import Store
from batchyard.store import open_store

BATCHYARD = str(Path(sys.executable).parent / "batchyard")
ADMIN_URL = os.environ.get("BATCHYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_FLIGHT = 64  # per worker, for the 10 ms workload (and each worker's --concurrency)
IDLE_FLEET = 4


def batchyard_chunk() -> int:
    """The chunk a batchyard worker claims no-op items in once it knows they take microseconds: it holds up
    to ``buffer_target`` items and claims again when down to ``refill_at``, so each claim brings the
    difference (and group commits come every FLUSH_SECONDS, of about as many outcomes at these rates)."""
    instant = defaults.INSTANT_ITEM_SECONDS / 4
    return buffer_target(IN_FLIGHT, instant) - refill_at(IN_FLIGHT, instant)


def with_db(url: str, dbname: str, schema: str | None = None) -> str:
    parts = urlsplit(url)
    query = f"options={quote(f'-csearch_path={schema}')}" if schema else ""
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", query, ""))


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    name = f"batchyard_bench_{secrets.token_hex(5)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_schema(db_url: str, dbname: str) -> str:
    """A new empty schema (fresh tables and indexes for every run); the store URL that uses it."""
    schema = f"s_{secrets.token_hex(5)}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return with_db(db_url, dbname, schema)


# -- batchyard worker processes ---------------------------------------------------------------------------


# ``batchyard worker`` with every statement its psycopg sends counted (each execute; BEGIN and COMMIT around
# each transaction), the running total written to $BATCHYARD_BENCH_COUNT twice a second: the idle fleet's
# queries, counted where they are made (the server counts them only with pg_stat_statements preloaded).
COUNTING_WORKER = """
import os, sys, threading, time
import psycopg
from batchyard.cli.main import main
sent = [0]
def counted(fn, n):
    def wrapper(*args, **kwargs):
        sent[0] += n
        return fn(*args, **kwargs)
    return wrapper
psycopg.Cursor.execute = counted(psycopg.Cursor.execute, 1)
psycopg.Transaction.__enter__ = counted(psycopg.Transaction.__enter__, 1)
psycopg.Transaction.__exit__ = counted(psycopg.Transaction.__exit__, 1)
def report():
    path = os.environ["BATCHYARD_BENCH_COUNT"]
    while True:
        with open(path + ".tmp", "w") as fh:
            fh.write(str(sent[0]))
        os.replace(path + ".tmp", path)
        time.sleep(0.5)
threading.Thread(target=report, daemon=True).start()
sys.argv[0] = "batchyard"
main()
"""


@contextmanager
def worker_fleet(store_url: str, n: int, count_in: Path | None = None) -> Iterator[Store]:
    """``n`` idle ``batchyard worker`` processes on the store, registered; stopped (SIGTERM) at the end.
    With ``count_in``, each counts the statements it sends, in ``count_in/<i>``."""
    store = open_store(store_url)  # creates the schema before the workers race to
    args = ["worker", "--store", store_url, "--concurrency", str(IN_FLIGHT), "--log-level", "warning"]
    procs = []
    for i in range(n):
        cmd = [BATCHYARD, *args, "--name", f"bench-{i}"]
        env = dict(os.environ)
        if count_in is not None:
            cmd = [sys.executable, "-c", COUNTING_WORKER, *args, "--name", f"bench-{i}"]
            env["BATCHYARD_BENCH_COUNT"] = str(count_in / str(i))
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    try:
        deadline = time.monotonic() + 60
        while len(store.list_workers()) < n:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                errors = [p.stderr.read().decode()[-2000:] for p in procs if p.poll() is not None and p.stderr]
                raise SystemExit(f"batchyard workers did not start: {errors}")
            time.sleep(0.05)
        yield store
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        store.close()


def run_batch(store: Store, processor: str, n: int, parallel: int, params: dict[str, Any] | None = None) -> float:
    """Create a pending batch, start it, wait for it; items/s from its start to its completion by the store's
    clock (the database's, for PostgreSQL)."""
    spec = BatchSpec(processor=processor, params=params or {}, parallel=parallel)
    b = store.create_batch(spec, ((None, f"item-{i}") for i in range(n)), start=False)
    store.transition(b.batch_id, "start")
    while True:
        info = store.get_batch(b.batch_id)
        if info.is_final:
            break
        time.sleep(0.05)
    if info.status != "completed" or info.items_succeeded != n:
        raise SystemExit(f"batch {b.batch_id} ended {info.status} with {info.items_succeeded}/{n} succeeded")
    assert info.started_at is not None and info.completed_at is not None
    return n / (info.completed_at - info.started_at).total_seconds()


def measure_config(store_url: str, workers: int, n: int, sleep_n: int) -> tuple[float, float]:
    """(no-op items/s, 10 ms items/s) with ``workers`` worker processes on the store."""
    with worker_fleet(store_url, workers) as store:
        noop = run_batch(store, "noop", n, IN_FLIGHT * workers)
        slept = run_batch(store, "sleep", sleep_n * workers, IN_FLIGHT * workers, {"ms": 10})
    return noop, slept


# -- the bare ceiling: a plain psycopg loop ---------------------------------------------------------------

BARE_SCHEMA = """
CREATE TABLE bare_batch (pk int PRIMARY KEY, pending int NOT NULL, running int NOT NULL, done int NOT NULL);
CREATE TABLE bare_items (batch_pk int NOT NULL, seq int NOT NULL, status smallint NOT NULL DEFAULT 0,
                         payload jsonb, result jsonb, worker int, attempts int NOT NULL DEFAULT 0,
                         started_at timestamptz, finished_at timestamptz, PRIMARY KEY (batch_pk, seq));
CREATE INDEX bare_items_pending ON bare_items (batch_pk, seq) WHERE status = 0;
"""
# Plans pinned as batchyard pins its own (rows found by ctid; one index probe per outcome): on tables whose
# statistics predate the claims, the planner would otherwise join every outcome against every leased row.
BARE_CLAIM = """
WITH picked AS (
    SELECT ctid AS tid FROM bare_items WHERE batch_pk = 1 AND status = 0 ORDER BY seq LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
)
UPDATE bare_items i SET status = 1, worker = %(worker)s, attempts = i.attempts + 1
FROM picked p WHERE i.ctid = p.tid
RETURNING i.seq, i.payload
"""
BARE_RECORD = """
UPDATE bare_items i SET status = 2, result = o.result, started_at = to_timestamp(o.s), finished_at = to_timestamp(o.f)
FROM (
    SELECT o.*, x.tid
    FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS o(seq int, result jsonb, s float8, f float8),
         LATERAL (SELECT ctid AS tid FROM bare_items
                  WHERE batch_pk = 1 AND seq = o.seq AND status = 1 AND worker = %(worker)s OFFSET 0) AS x
) AS o
WHERE i.ctid = o.tid
"""


def bare_child(url: str, worker: int, chunk: int) -> None:
    """One process of the bare loop: claim a chunk, run it, record it; until nothing is left to claim."""
    with psycopg.connect(url, autocommit=True) as conn:
        print("ready", flush=True)
        sys.stdin.readline()  # the parent's "go", once every process is connected
        while True:
            with conn.transaction():
                rows = conn.execute(BARE_CLAIM, {"n": chunk, "worker": worker}).fetchall()
                if not rows:
                    print("done", flush=True)  # timed here: a busy machine takes long to tear an interpreter down
                    return
                conn.execute("UPDATE bare_batch SET pending = pending - %(n)s, running = running + %(n)s "
                             "WHERE pk = 1", {"n": len(rows)})
            outcomes = []
            for seq, payload in rows:
                t = time.time()
                outcomes.append({"seq": seq, "result": {"value": payload}, "s": t, "f": time.time()})
            with conn.transaction():
                conn.execute(BARE_RECORD, {"outcomes": json.dumps(outcomes), "worker": worker})
                conn.execute("UPDATE bare_batch SET running = running - %(n)s, done = done + %(n)s WHERE pk = 1",
                             {"n": len(rows)})


def bare_loop(url: str, n: int, chunk: int, processes: int = 2) -> float:
    """items/s of ``processes`` bare loops over ``n`` items on a fresh schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BARE_SCHEMA)
        conn.execute("INSERT INTO bare_batch VALUES (1, %s, 0, 0)", (n,))
        conn.execute("INSERT INTO bare_items (batch_pk, seq, payload) "
                     "SELECT 1, g, to_jsonb('item-' || g) FROM generate_series(1, %s) g", (n,))
        conn.execute("ANALYZE bare_items")
    procs = [subprocess.Popen([sys.executable, __file__, "--bare-child", url, str(i + 1), str(chunk)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(processes)]
    for p in procs:  # every child started and connected: start-up is not timed, as for the workers
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("the bare loop did not start")
    t = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        assert p.stdout is not None
        p.stdout.readline()  # "done" (or nothing, if it failed: its exit code says so below)
    elapsed = time.perf_counter() - t
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("the bare loop failed")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT done, pending, running FROM bare_batch").fetchone()
    if row != (n, 0, 0):
        raise SystemExit(f"the bare loop left {row} (done, pending, running), expected ({n}, 0, 0)")
    return n / elapsed


# -- other baselines -------------------------------------------------------------------------------------


def sleep_10ms(value: int) -> int:
    time.sleep(0.010)
    return value


def threadpool(n: int, workers: int) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(sleep_10ms, range(n)):
            pass
    return n / (time.perf_counter() - t)


def idle_fleet(admin_url: str, warmup: float, seconds: float, work: Path) -> dict[str, Any]:
    """Statements and transactions per second of IDLE_FLEET idle ``batchyard worker`` processes.

    Statements are counted by the workers' psycopg; transactions by the server (``pg_stat_database``) in a
    database of their own (the other runs' tables would bring autovacuum's transactions), whose backends
    report at most once a second while busy and within 10 s while idle: the window opens after a warm-up
    and is long enough for that lag to matter little."""
    counts = work / "counts"
    counts.mkdir(exist_ok=True)
    with throwaway_database(admin_url) as dbname:
        return _idle_fleet(admin_url, dbname, with_db(admin_url, dbname), warmup, seconds, counts)


def _idle_fleet(admin_url: str, dbname: str, store_url: str, warmup: float, seconds: float,
                counts: Path) -> dict[str, Any]:

    def sample(admin: psycopg.Connection[Any]) -> tuple[int, int]:
        admin.execute("SELECT pg_stat_clear_snapshot()")
        row = admin.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                            (dbname,)).fetchone()
        assert row is not None
        return int(row[0]), sum(int(f.read_text() or 0) for f in counts.iterdir() if f.suffix != ".tmp")

    with worker_fleet(store_url, IDLE_FLEET, counts), psycopg.connect(admin_url, autocommit=True) as admin:
        time.sleep(warmup)
        x0, c0 = sample(admin)
        t = time.perf_counter()
        time.sleep(seconds)
        x1, c1 = sample(admin)
        elapsed = time.perf_counter() - t
    return {"idle_workers": IDLE_FLEET, "idle_seconds": round(elapsed, 1),
            "idle_xacts_per_s": round((x1 - x0) / elapsed, 2), "idle_statements_per_s": round((c1 - c0) / elapsed, 2)}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default=ADMIN_URL, help="a PostgreSQL server (admin database URL)")
    ap.add_argument("--n", type=int, default=100_000, help="no-op items per run")
    ap.add_argument("--sleep-n", type=int, default=20_000, help="10 ms items per worker per run")
    ap.add_argument("--workers", default="1,2,4", help="PostgreSQL worker processes to measure, comma-separated")
    ap.add_argument("--bare-chunk", type=int, default=batchyard_chunk(),
                    help="chunk of the bare loop (default: the chunk batchyard claims no-op items in)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of measurements (medians are shown)")
    ap.add_argument("--idle-warmup", type=float, default=12.0)
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    load_before = load()

    work = Path(tempfile.mkdtemp(prefix="batchyard-scaleout-"))
    rounds: list[dict[str, float]] = []
    try:
        with throwaway_database(args.pg) as dbname:
            db_url = with_db(args.pg, dbname)
            # Round after round, each measuring everything: the machine's load drifts over minutes, so every
            # ratio is taken within one round (its parts a few seconds apart), then the median over rounds.
            for _ in range(args.repeat):
                r: dict[str, float] = {"bare": bare_loop(fresh_schema(db_url, dbname), args.n, args.bare_chunk)}
                for w in counts:
                    r[f"pg_{w}_noop"], r[f"pg_{w}_sleep"] = measure_config(fresh_schema(db_url, dbname), w,
                                                                          args.n, args.sleep_n)
                shutil.rmtree(work / "sqlite", ignore_errors=True)
                r["sqlite_noop"], r["sqlite_sleep"] = measure_config(str(work / "sqlite" / "batchyard.db"), 1,
                                                                     args.n, args.sleep_n)
                r["bare100"] = bare_loop(fresh_schema(db_url, dbname), args.n, 100)
                r["pool"] = threadpool(args.sleep_n, IN_FLIGHT)
                rounds.append(r)
        idle = idle_fleet(args.pg, args.idle_warmup, args.idle_seconds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(fn: Callable[[dict[str, float]], float]) -> float:
        return statistics.median(fn(r) for r in rounds)

    one = counts[0]
    bare, bare100, pool = med(lambda r: r["bare"]), med(lambda r: r["bare100"]), med(lambda r: r["pool"])
    lite = med(lambda r: r["sqlite_noop"]), med(lambda r: r["sqlite_sleep"])
    figures: dict[str, Any] = {
        "n": args.n, "sleep_n_per_worker": args.sleep_n, "repeat": args.repeat, "bare_chunk": args.bare_chunk,
        "bare_loop_2proc_per_s": round(bare), "bare_loop_2proc_chunk100_per_s": round(bare100),
        "threadpool64_per_s": round(pool), "sqlite_1_noop_per_s": round(lite[0]),
        "sqlite_1_sleep_per_s": round(lite[1]),
        "sqlite_1_sleep_vs_threadpool": round(med(lambda r: r["sqlite_sleep"] / r["pool"]), 2),
        "load_before": load_before, "load_after": load(), **idle,
    }
    for w in counts:
        figures[f"pg_{w}_noop_per_s"] = round(med(lambda r, w=w: r[f"pg_{w}_noop"]))
        figures[f"pg_{w}_sleep_per_s"] = round(med(lambda r, w=w: r[f"pg_{w}_sleep"]))
        figures[f"pg_{w}_noop_scaling"] = round(med(lambda r, w=w: r[f"pg_{w}_noop"] / r[f"pg_{one}_noop"]), 2)
        figures[f"pg_{w}_sleep_scaling"] = round(med(lambda r, w=w: r[f"pg_{w}_sleep"] / r[f"pg_{one}_sleep"]), 2)
        figures[f"pg_{w}_sleep_vs_threadpool"] = round(med(lambda r, w=w: r[f"pg_{w}_sleep"] / (w * r["pool"])), 2)
    if 2 in counts:
        figures["noop_pg2_vs_bare"] = round(med(lambda r: r["pg_2_noop"] / r["bare"]), 2)

    print(f"scale-out on {os.cpu_count()} cores, median of {args.repeat} rounds (ratios within each round); "
          f"load average before {load_before}, after {figures['load_after']}")
    print(f"no-op, {args.n:,} items")
    for w in counts:
        scale = f"   x{figures[f'pg_{w}_noop_scaling']:.2f} of {one} worker" if w != one else ""
        label = f"PostgreSQL, {w} worker{'s' if w > 1 else ''}"
        print(f"    {label:<27}{figures[f'pg_{w}_noop_per_s']:>10,} items/s{scale}")
    print(f"    SQLite, 1 worker           {lite[0]:>10,.0f} items/s")
    print(f"    bare psycopg loop, 2 proc  {bare:>10,.0f} items/s   (SKIP LOCKED, chunk {args.bare_chunk})")
    print(f"    bare psycopg loop, 2 proc  {bare100:>10,.0f} items/s   (chunk 100, for reference)")
    if 2 in counts:
        print(f"    PostgreSQL 2 workers / bare loop: {figures['noop_pg2_vs_bare']:.2f} (target >= 0.70)")
    print(f"10 ms items, {args.sleep_n:,} per worker, {IN_FLIGHT} in flight per worker")
    for w in counts:
        scale = f", x{figures[f'pg_{w}_sleep_scaling']:.2f} of {one} worker" if w != one else ""
        label = f"PostgreSQL, {w} worker{'s' if w > 1 else ''}"
        print(f"    {label:<27}{figures[f'pg_{w}_sleep_per_s']:>10,} items/s   "
              f"{figures[f'pg_{w}_sleep_vs_threadpool']:.2f} of {w} x ThreadPoolExecutor(64)"
              + (" (target >= 0.9)" if w == 1 else scale))
    print(f"    SQLite, 1 worker           {lite[1]:>10,.0f} items/s   "
          f"{figures['sqlite_1_sleep_vs_threadpool']:.2f} of ThreadPoolExecutor(64)")
    print(f"    ThreadPoolExecutor(64)     {pool:>10,.0f} items/s   (in memory)")
    print(f"idle fleet: {IDLE_FLEET} workers, {idle['idle_statements_per_s']:.2f} statements/s "
          f"({idle['idle_xacts_per_s']:.2f} transactions/s) over {idle['idle_seconds']:g} s (target < 10 queries/s)")
    if args.json:
        print(json.dumps(figures))

if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--bare-child":
        bare_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
