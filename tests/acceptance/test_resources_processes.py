"""A batch's shared resource is set up exactly once across `kill -9` and across worker processes racing for it
(SQLite, and PostgreSQL where several machines share one store), and torn down once at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from _support import BIN, cli, cli_env, log_counts, wait_for, write_lines

from batchyard.core.models import BatchSpec, NewItem
from batchyard.store import open_store
from pg_fixtures import pg_admin, pg_database, pg_url  # noqa: F401  (fixtures, found by pytest by name)

PROCS = textwrap.dedent('''
    import os
    import time

    import batchyard


    def _append(path, line):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


    class Counted(batchyard.Resource):
        """Logs every setup and teardown (with the pid) to files named by the batch's params."""

        capacity = 100

        def setup(self, ctx):
            _append(ctx.params["setups"], f"{os.getpid()} {ctx.batch_id}")
            time.sleep(float(ctx.params.get("setup_s", 0)))
            return {"token": f"tok-{os.getpid()}"}

        def teardown(self, state, ctx):
            _append(ctx.params["teardowns"], state["token"])


    @batchyard.processor("counted", resource=Counted, retry=2)
    def counted(item, ctx):
        time.sleep(float(item.params.get("ms", 0)) / 1000)
        _append(item.params["log"], f"{item.id} {ctx.resource['token']}")
        ctx.use_resource(1)
        return {"token": ctx.resource["token"]}
''')


def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "procs.py").write_text(PROCS)
    return {"setups": str(tmp_path / "setups.log"), "teardowns": str(tmp_path / "teardowns.log"),
            "log": str(tmp_path / "ran.log")}


def lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines() if Path(path).exists() else []


def test_kill_9_mid_batch_then_the_rerun_reuses_the_resource(tmp_path: Path) -> None:
    f = files(tmp_path)
    items = write_lines(tmp_path / "items.txt", range(30))
    args = ["run", items, "--processor", "counted", "--processors", tmp_path / "procs.py", "--store",
            tmp_path / "s.db", "--parallel", "2", *(x for k, v in f.items() for x in ("--param", f"{k}={v}")),
            "--param", "ms=60"]
    proc = subprocess.Popen([str(BIN), *map(str, args)], env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: len(lines(f["log"])) >= 6, timeout=30, what="some items to run")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(lines(f["setups"])) == 1 and lines(f["teardowns"]) == []
    token = lines(f["log"])[0].split()[1]
    res = cli(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(lines(f["setups"])) == 1, "the resumed batch bought no second resource"
    assert lines(f["teardowns"]) == [token]
    assert set(log_counts(Path(f["log"]))) == {str(i) for i in range(1, 31)}
    assert {line.split()[1] for line in lines(f["log"])} == {token}
    assert "  resource closed: 30 of 100 used (30%)" in cli("status", "--store", tmp_path / "s.db").stdout


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_worker_processes_set_it_up_once(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    f = files(tmp_path)
    url = str(tmp_path / "s.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = open_store(url)
    info = store.create_batch(BatchSpec(processor="counted", parallel=8, params={**f, "ms": 20, "setup_s": 1.0}),
                              [NewItem(payload=i) for i in range(40)])
    workers = [subprocess.Popen([str(BIN), "worker", "--store", url, "--processors", str(tmp_path / "procs.py"),
                                 "--concurrency", "4", "--name", f"w{n}", "--log-level", "warning"],
                                env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(tmp_path / f"w{n}.log", "w"), start_new_session=True)  # noqa: SIM115
               for n in range(2)]
    try:
        done = wait_for(lambda: (b := store.get_batch(info.batch_id)).is_final and b, timeout=60,
                        what="the batch to end")
        wait_for(lambda: lines(f["teardowns"]), timeout=30, what="the teardown")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
    assert done.status == "completed" and done.items_succeeded == 40
    assert len(lines(f["setups"])) == 1
    assert len(lines(f["teardowns"])) == 1
    ran_by = {line.split()[1] for line in lines(f["log"])}
    assert len(ran_by) == 1  # every item, whichever worker ran it, got the one resource
    time.sleep(0.2)
    final = store.get_batch(info.batch_id).resource
    assert final is not None and (final.status, final.used, final.capacity) == ("closed", 40.0, 100.0)
    store.close()
