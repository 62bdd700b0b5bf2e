"""The Store contract on PostgreSQL, plus what only the PostgreSQL store has.

Each test gets a fresh schema of a throwaway database (``tests/pg_fixtures.py``, through this folder's
conftest): these tests skip when no server can be reached, and fail under CI, which must run them.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from test_store_contract import (
    PROCS,
    StoreContract,
    assert_counters_match_items,
    claim_batch,
    fail,
    new_batch,
    ok,
    retry,
    us,
)

from batchyard.core.errors import InvalidTransition, SchemaVersionError
from batchyard.core.models import BatchSpec, NewItem
from batchyard.core.store import Claimed, Store
from batchyard.store import open_store, upgrade_store
from batchyard.store import postgres as pg
from batchyard.store.postgres import PostgresStore
from batchyard.store.sql import migrations


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchyard", *args], capture_output=True, text=True, timeout=60)


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, pg_url: str) -> Iterator[PostgresStore]:
        s = PostgresStore(pg_url)
        yield s
        s.close()

    @pytest.fixture
    def reopen(self, pg_url: str) -> Iterator[Callable[[], PostgresStore]]:
        opened: list[PostgresStore] = []

        def make() -> PostgresStore:
            s = PostgresStore(pg_url)
            opened.append(s)
            return s

        yield make
        for s in opened:
            s.close()

    def set_schema_version(self, store: Store, version: int) -> None:
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(version),))

    # -- what only this store has ---------------------------------------------------------------

    def test_store_satisfies_the_protocol(self, store: PostgresStore, pg_url: str) -> None:
        assert isinstance(store, Store)
        assert store.url == pg_url
        for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
            other = open_store(url)
            try:
                assert isinstance(other, PostgresStore)
            finally:
                other.close()

    def test_schema_version_is_latest_migration(self, store: PostgresStore) -> None:
        assert store.schema_version() == migrations("postgres")[-1][0]

    def test_newer_schema_error_names_both_versions(self, store: PostgresStore,
                                                    reopen: Callable[[], Store]) -> None:
        self.set_schema_version(store, 10_000)
        latest = migrations("postgres")[-1][0]
        with pytest.raises(SchemaVersionError, match=f"version 10000, newer than this batchyard knows \\({latest}\\)"):
            reopen()

    def test_older_schema_is_refused_until_upgraded(self, store: PostgresStore, pg_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        b = new_batch(store, 2)
        known = migrations("postgres")
        latest = known[-1][0]
        later = [*known, (latest + 1, "CREATE TABLE later_table (x int); INSERT INTO later_table VALUES (7);")]
        monkeypatch.setattr(pg, "migrations", lambda dialect: later)
        with pytest.raises(SchemaVersionError, match=f"version {latest}, older than this batchyard "
                                                     f"\\({latest + 1}\\).*batchyard db upgrade"):
            PostgresStore(pg_url)
        assert upgrade_store(pg_url) == (latest, latest + 1)
        assert upgrade_store(pg_url) == (latest + 1, latest + 1)  # nothing left to do
        again = PostgresStore(pg_url)
        try:
            assert again.schema_version() == latest + 1
            assert again.get_batch(b.batch_id).items_total == 2  # the data stayed
        finally:
            again.close()
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT x FROM later_table").fetchone() == (7,)

    def test_failed_migration_leaves_nothing_behind(self, store: PostgresStore, pg_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        known = migrations("postgres")
        latest = known[-1][0]
        broken = [*known, (latest + 1, "CREATE TABLE half_done (x int); SELECT no_such_function();")]
        monkeypatch.setattr(pg, "migrations", lambda dialect: broken)
        with pytest.raises(psycopg.errors.UndefinedFunction):
            upgrade_store(pg_url)
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert store.schema_version() == latest

    def test_foreign_tables_are_not_taken_for_an_empty_schema(self, pg_url: str) -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE someone_elses (x int)")
        with pytest.raises(SchemaVersionError, match="tables but no batchyard schema"):
            PostgresStore(pg_url)
        assert upgrade_store(pg_url) == (0, migrations("postgres")[-1][0])
        PostgresStore(pg_url).close()

    def test_concurrent_first_opens_migrate_once(self, pg_url: str) -> None:
        opened: list[PostgresStore] = []
        errors: list[BaseException] = []

        def open_one() -> None:
            try:
                opened.append(PostgresStore(pg_url))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in opened:
            s.close()
        assert errors == [] and len(opened) == 4

    def test_db_upgrade_command(self, pg_url: str) -> None:
        latest = migrations("postgres")[-1][0]
        first = run_cli("db", "upgrade", "--store", pg_url)
        assert first.returncode == 0, first.stderr
        assert f"0 -> {latest}" in first.stdout
        again = run_cli("db", "upgrade", "--store", pg_url)
        assert again.returncode == 0 and f"up to date (schema version {latest})" in again.stdout

    def test_unreachable_server_is_a_config_error(self) -> None:
        from batchyard.core.errors import ConfigError

        with pytest.raises(ConfigError, match=r"cannot connect to the PostgreSQL store postgresql://u:\*\*\*@"):
            PostgresStore("postgresql://u:secret@127.0.0.1:1/nowhere?connect_timeout=2")

    def test_wait_for_work_times_out_without_work(self, store: PostgresStore) -> None:
        assert store.wait_for_work(0.15) is True  # the first call starts listening: look for work once
        t0 = time.monotonic()
        assert store.wait_for_work(0.15) is False
        assert 0.1 <= time.monotonic() - t0 < 2

    @pytest.mark.parametrize("how", ["create", "start", "resume", "retry"])
    def test_wait_for_work_wakes_on_new_work(self, store: PostgresStore, reopen: Callable[[], Store],
                                             how: str) -> None:
        other = reopen()  # another machine
        assert store.wait_for_work(0.01) is True  # listening from now on (the first call says to look once)
        b = new_batch(other, 2, start=how not in ("start",))
        if how == "resume":
            other.transition(b.batch_id, "pause")
        elif how == "retry":
            w = other.register_worker("w", ["noop"], 2)
            pk, got = claim_batch(other, w, b, capacity=2)
            other.record(w, [ok(pk, got[0]), fail(pk, got[1])])
            assert other.get_batch(b.batch_id).status == "completed"
        store.wait_for_work(0.05)  # drain what was announced so far (the creation)

        def act() -> None:
            time.sleep(0.1)
            if how in ("start", "resume", "retry"):
                other.transition(b.batch_id, how)
            else:
                new_batch(other, 1)

        t = threading.Thread(target=act)
        t0 = time.monotonic()
        t.start()
        assert store.wait_for_work(10) is True
        assert time.monotonic() - t0 < 5  # woken by the notification, not by the timeout
        t.join()
        assert store.wait_for_work(0.05) is False  # one announcement wakes a waiter once

    def test_leases_are_judged_by_the_database_clock(self, store: PostgresStore, reopen: Callable[[], Store],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        b = new_batch(store, 2, parallel=2)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 3600)  # this machine's clock is an hour slow
        w = store.register_worker("slow-clock", ["noop"], 2)
        pk, got = claim_batch(store, w, b, capacity=2)
        assert store.heartbeat(w, {b.batch_id: 2}) is True
        monkeypatch.setattr(time, "time", real)
        other = reopen()
        assert other.reap(60).workers == 0  # its heartbeat is fresh by the database's clock
        assert store.record(w, [ok(pk, c) for c in got]).accepted == 2

    def test_retry_delay_is_rebased_on_the_database_clock(self, store: PostgresStore, worker: int) -> None:
        b = new_batch(store, 1)
        pk, got = claim_batch(store, worker, b)
        skew = 3600.0  # the worker's clock is an hour fast: its not_before would be an hour away
        o = retry(pk, got[0], not_before=time.time() + skew + 0.3)
        o = o._replace(started=us(time.time() + skew - 0.01), finished=us(time.time() + skew))
        store.record(worker, [o])
        assert claim_batch(store, worker, b)[1] == []  # the 0.3 s backoff holds ...
        time.sleep(0.4)
        assert [c.attempts for c in claim_batch(store, worker, b)[1]] == [2]  # ... and no longer

    def test_nul_characters_do_not_break_a_chunk(self, store: PostgresStore, worker: int) -> None:
        b = store.create_batch(BatchSpec(processor="noop"), [NewItem(key="k\x00", payload="a\x00b"),
                                                             NewItem(payload={"x": "\\u0000"})])
        items = list(store.iter_items(b.batch_id))
        assert [i.payload for i in items] == ["a\ufffdb", {"x": "\\u0000"}]  # an escaped backslash is kept
        pk, got = claim_batch(store, worker, b)
        res = store.record(worker, [ok(pk, got[0], {"text": "nul \x00 here"}), ok(pk, got[1])])
        assert (res.accepted, res.refused) == (2, 0)
        assert store.get_item(b.batch_id, "k\ufffd").result == {"text": "nul \ufffd here"}

    def test_workers_racing_with_pauses_and_reaps_keep_counters_exact(self, store: PostgresStore,
                                                                      reopen: Callable[[], Store]) -> None:
        """Claims, records, releases, pauses, resumes and reaps on one batch from several handles at
        once: nothing deadlocks, nothing is recorded twice, the counters match the items."""
        n = 600
        b = new_batch(store, n, parallel=12)
        done = threading.Event()
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                s = reopen()
                w = s.register_worker(f"w{i}", ["noop"], 4)
                while not done.is_set():
                    if not s.heartbeat(w, {}):  # reaped: start afresh, as Worker._lost_lease does
                        w = s.register_worker(f"w{i}", ["noop"], 4)
                    res = s.claim(w, PROCS, 4, {}, {b.batch_id})
                    if not res.items:
                        time.sleep(0.002)
                        continue
                    pk, got = next(iter(res.items.items()))
                    got = [Claimed._make(c) for c in got]
                    keep, back = got[: len(got) // 2 + 1], got[len(got) // 2 + 1:]
                    s.release(w, pk, [c.rowid for c in back])
                    s.record(w, [ok(pk, c) for c in keep])
                    if i == 0:  # a worker that claims and dies: the reaper gives its items back
                        ghost = s.register_worker("ghost", ["noop"], 2)
                        s.claim(ghost, PROCS, 2, {}, {b.batch_id})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        try:
            while time.time() < deadline and not store.get_batch(b.batch_id).is_final:
                try:
                    store.transition(b.batch_id, "pause")
                except InvalidTransition:  # it completed since the check
                    break
                store.reap(0.02)
                time.sleep(0.01)
                store.transition(b.batch_id, "resume")
                time.sleep(0.03)
        finally:
            done.set()
            for t in threads:
                t.join(30)
        assert errors == []
        final = store.get_batch(b.batch_id)
        assert final.status == "completed" and final.items_succeeded == n
        assert_counters_match_items(store, b.batch_id)

    def test_big_chunks_on_a_fresh_table_stay_fast(self, store: PostgresStore) -> None:
        """Group commits and claims of thousands of items on a table without planner statistics.

        With the plans left to the planner, a 50k-item batch once took 56 s to record on a 2M-item table
        that had never been analysed (a nested loop rescanning every outcome for every leased item);
        the plans are pinned now. This small table does not reproduce that plan, but it keeps the
        pinned statements' cost in view."""
        b = store.create_batch(BatchSpec(processor="noop", parallel=4000), ((None, i) for i in range(20_000)))
        w = store.register_worker("big", ["noop"], 4000)
        t0 = time.monotonic()
        res = store.claim(w, PROCS, 4000, {}, {b.batch_id})
        pk, got = next(iter(res.items.items()))
        more = store.claim(w, PROCS, 4000, {}, {b.batch_id}).items[pk]
        assert len(got) + len(more) == 8000  # the worker holds 8000 leases
        now = us(time.time())
        outcome = store.record(w, [(pk, c[0], "ok", {"n": c[1]}, None, now - 5, now, None, None) for c in got[:4000]])
        assert outcome.accepted == 4000
        assert time.monotonic() - t0 < 3  # about 0.1 s; the quadratic plans took 7 s and more
