"""The store under faults: commits that returned survive ``kill -9``; SQLite's durability settings; a
damaged store file refused at start-up (never silently re-created); a full disk that fails submissions
whole while workers wait for space; PostgreSQL connections dropped under a running worker.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _faults_support import BIN, Worker, check_exactly_once, report, submit, wait_for

from batchyard.core import defaults
from batchyard.core.errors import StoreUnavailable
from batchyard.core.models import BatchSpec
from batchyard.core.processor import Processor
from batchyard.core.worker import Worker as CoreWorker
from batchyard.store import open_store
from batchyard.store.sqlite import PRAGMAS, SQLiteStore

pytestmark = pytest.mark.slow

# -- a commit that returned survives kill -9 --------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from batchyard.core.models import BatchSpec
    from batchyard.core.processor import get
    from batchyard.core.store import OK, Outcome
    from batchyard.store import open_store

    store = open_store(sys.argv[1])
    b = store.create_batch(BatchSpec(processor="noop"), [(None, i) for i in range(500)])
    w = store.register_worker("child", ["noop"], 500)
    res = store.claim(w, {"noop": get("noop")}, 500, {}, {b.batch_id})
    [(pk, items)] = res.items.items()
    now = int(time.time() * 1e6)
    r = store.record(w, [Outcome(pk, c[0], OK, {"n": c[3]}, None, now, now, None, None) for c in items])
    assert r.accepted == len(items) > 0
    print(b.batch_id, r.accepted, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # right after the commit returned: no close, no checkpoint
""")


@pytest.mark.timeout(60)
def test_a_commit_that_returned_survives_kill_9(store_url: str, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    p = subprocess.run([sys.executable, str(script), store_url], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    batch_id, accepted = p.stdout.split()
    n = int(accepted)
    if not store_url.startswith("postgres"):
        assert Path(store_url + "-wal").stat().st_size > 0, "the commit is expected in the WAL, not checkpointed"
    s = open_store(store_url)
    try:
        info = s.get_batch(batch_id)
        # every outcome the commit recorded is there (the claim took only some of the items)
        assert (info.items_succeeded, info.items_running, info.items_pending) == (n, 0, 500 - n), info
        assert sorted(it.result["n"] for it in s.iter_items(batch_id) if it.result) == list(range(n))
    finally:
        s.close()


# -- SQLite's durability settings --------------------------------------------------------------------------


def test_sqlite_durability_settings_are_stated_and_applied(tmp_path: Path) -> None:
    """WAL (readers never block the writer), synchronous=NORMAL (a commit survives the process dying; an OS
    crash may drop the last few), and a busy timeout so that writers queue instead of failing."""
    assert (PRAGMAS["journal_mode"], PRAGMAS["synchronous"], PRAGMAS["busy_timeout"]) == \
        ("wal", "normal", defaults.SQLITE_BUSY_TIMEOUT_MS)
    s = SQLiteStore(tmp_path / "s.db")
    try:
        assert (s.pragma("journal_mode"), s.pragma("synchronous"), s.pragma("busy_timeout")) == \
            ("wal", 1, defaults.SQLITE_BUSY_TIMEOUT_MS)
    finally:
        s.close()


@pytest.mark.timeout(60)
def test_a_writer_waits_for_the_lock_instead_of_failing(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db")
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock ...
        released = threading.Timer(1.0, lambda: other.execute("COMMIT"))  # ... for a second
        t0 = time.monotonic()
        released.start()
        b = s.create_batch(BatchSpec(processor="noop"), [(None, 1)])
        waited = time.monotonic() - t0
        released.join()
        assert waited >= 0.9, f"the write did not wait for the lock ({waited:.2f}s)"
        assert s.get_batch(b.batch_id).items_total == 1
    finally:
        other.close()
        s.close()


# -- a damaged store file ------------------------------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif how == "empty":
        with open(path, "r+b") as f:
            f.truncate(0)
    elif how == "overwritten":
        path.write_bytes(os.urandom(64 * 1024))
    elif how == "text":
        path.write_text("hello\n" * 1000)
    elif how == "foreign":  # another program's SQLite database in its place
        path.unlink()
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
        conn.close()


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store with a finished batch, closed cleanly (no -wal left)."""
    path = tmp_path_factory.mktemp("good") / "batchyard.db"
    s = SQLiteStore(path)
    s.create_batch(BatchSpec(processor="noop"), [(None, i) for i in range(3000)])
    s.close()
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["truncated", "empty", "overwritten", "text", "foreign"])
def test_a_damaged_store_file_is_refused_never_recreated(good_store: Path, tmp_path: Path, how: str) -> None:
    path = tmp_path / "batchyard.db"
    path.write_bytes(good_store.read_bytes())
    _damage(path, how)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for args in (["worker", "--store", str(path)], ["status", "--store", str(path)],
                 ["run", str(good_store), "--processor", "noop", "--store", str(path)]):
        p = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert p.returncode != 0, f"batchyard {args[0]} started on a {how} store:\n{p.stdout}{p.stderr}"
        assert "Traceback" not in p.stderr, p.stderr
        assert str(path) in p.stderr and ("damaged" in p.stderr or "not a batchyard store" in p.stderr), p.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "the damaged file was written to"
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def test_a_new_store_is_created_where_there_is_none(tmp_path: Path) -> None:
    path = tmp_path / "new" / "batchyard.db"
    s = SQLiteStore(path)
    try:
        assert s.list_batches() == [] and s.schema_version() > 0
    finally:
        s.close()
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith("batchyard.db")] == [], \
        "a temporary file was left behind"


def test_opening_a_store_again_in_a_process_keeps_its_wal(tmp_path: Path) -> None:
    """The start-up check reads the file through SQLite: a plain open()/close() of it would drop the locks
    that the process's open store holds, and the next process to close it would delete the WAL under it."""
    path = tmp_path / "s.db"
    first = SQLiteStore(path)
    try:
        first.create_batch(BatchSpec(processor="noop"), [(None, 1)])
        SQLiteStore(path).close()  # checks the file while ``first`` holds it open
        subprocess.run([str(BIN), "list", "--store", str(path)], check=True, capture_output=True, timeout=30)
        assert Path(f"{path}-wal").exists(), "another process deleted the WAL of a store still open here"
        first.create_batch(BatchSpec(processor="noop"), [(None, 2)])
        assert len(first.list_batches()) == 2
    finally:
        first.close()


# -- a full disk ---------------------------------------------------------------------------------------


class CappedStore(SQLiteStore):
    """An SQLite store on a "disk" of ``cap`` pages (``PRAGMA max_page_count``, set on every connection)."""

    cap = 2**31 - 2

    def _conn(self) -> sqlite3.Connection:
        conn = super()._conn()
        conn.execute(f"PRAGMA max_page_count = {self.cap}")
        return conn


def big_result(item: Any, ctx: Any) -> dict[str, Any]:
    big_result.calls.append(item.id)  # type: ignore[attr-defined]
    return {"blob": "x" * 3000, "n": item.payload}


@pytest.mark.timeout(90)
def test_a_full_disk_fails_submissions_whole_and_workers_wait_for_space(tmp_path: Path,
                                                                        request: pytest.FixtureRequest) -> None:
    store = CappedStore(tmp_path / "s.db")
    n = 200
    big_result.calls = []  # type: ignore[attr-defined]
    proc = Processor(name="big", fn=big_result)
    try:
        b = store.create_batch(BatchSpec(processor="big", parallel=4), [(None, i) for i in range(n)])
        store.cap = int(store.pragma("page_count")) + 2  # the disk is now (nearly) full

        # A submission that does not fit fails whole, saying why, and leaves nothing behind.
        with pytest.raises(StoreUnavailable, match="full"):
            store.create_batch(BatchSpec(processor="big"), [(None, "y" * 200) for _ in range(5000)])
        assert [x.batch_id for x in store.list_batches()] == [b.batch_id]
        assert store.pragma("page_count") <= store.cap

        w = CoreWorker(store, [proc], concurrency=4, lease_seconds=5)
        w.start()
        try:
            # Items run, but their outcomes cannot be written: the worker keeps them and waits.
            wait_for(lambda: len(big_result.calls) >= 8, timeout=30, what="items to run")  # type: ignore[attr-defined]
            time.sleep(1.5)
            stuck = store.get_batch(b.batch_id)
            assert w.alive, "the worker died of the full disk"
            assert stuck.items_failed == 0 and stuck.items_succeeded < n, stuck
            store.cap = 2**31 - 2  # space is back
            wait_for(lambda: store.get_batch(b.batch_id).is_final, timeout=60, what="the batch to finish")
        finally:
            w.stop()
        info = store.get_batch(b.batch_id)
        assert (info.items_succeeded, info.items_failed, info.status) == (n, 0, "completed"), info
        calls = big_result.calls  # type: ignore[attr-defined]
        assert sorted(map(int, calls)) == list(range(1, n + 1)), "an item ran twice or never"
        report(request, f"disk full: submission refused whole; worker waited with {stuck.items_succeeded} of "
                        f"{n} done, then finished all {n} once space was back, 0 failed, 0 run twice")
    finally:
        store.close()


# -- PostgreSQL connections dropped under a running worker ------------------------------------------------


@pytest.fixture
def pg_store_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_url"))


@pytest.mark.timeout(90)
def test_dropped_postgres_connections_do_not_stop_a_worker(pg_store_url: str, procs: Path, tmp_path: Path,
                                                           request: pytest.FixtureRequest) -> None:
    n = 600
    log = tmp_path / "calls.log"
    store = open_store(pg_store_url)
    b = submit(store, "side", range(n), parallel=8, log=str(log), ms=15)
    store.close()
    w = Worker(pg_store_url, procs, tmp_path / "worker.log", concurrency=8)
    dropped = 0
    try:
        with psycopg.connect(pg_store_url, autocommit=True) as admin:
            def progress() -> int:
                row = admin.execute(f"SELECT items_succeeded FROM batches WHERE id = '{b.batch_id}'").fetchone()
                return int(row[0]) if row else 0

            for _ in range(3):  # three times while it runs: every connection of the worker goes at once
                at = progress()
                wait_for(lambda at=at: progress() > at + 50, timeout=30, what="progress")
                dropped += admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'batchyard' AND pid <> pg_backend_pid()").fetchone()[0]
            wait_for(lambda: progress() == n, timeout=60, what="the batch to finish")
        assert w.p.poll() is None, f"the worker died:\n{w.output()}"
    finally:
        w.stop()
    assert w.p.returncode == 0, w.output()
    store = open_store(pg_store_url)
    try:
        fig = check_exactly_once(store, b.batch_id, n, log, crashed=set())
    finally:
        store.close()
    assert not (fig.lost or fig.duplicated or fig.unexpected or fig.reruns), fig.summary()
    report(request, f"{dropped} connections dropped in 3 rounds; worker carried on: {fig.summary()}")

