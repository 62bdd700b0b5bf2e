"""examples/swarm_upload (seed 000), end to end against the example's local Bee node over HTTP: the README as
written, one stamp for a folder of generated files, `kill -9` and a resumed run buying no second stamp (also
while the stamp was still becoming usable), a manifest listing every file once with references that fetch the
files back, and a full stamp failing the remaining files with a clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _seed_examples import REPO, clean_env, free_port, run_readme, wait_for, workspace

import batchyard

EXAMPLE = REPO / "examples" / "swarm_upload"
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(300)
PRICE_SMALL = 1_000_000_000 * 2 ** 17 / 10 ** 16  # BZZ: the small preset's stamp


class Bee:
    """The example's local Bee node on a free port."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(tmp / f"bee-{self.url.rsplit(':', 1)[1]}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, str(EXAMPLE / "bee.py"), "serve", "--port",
                                      self.url.rsplit(":", 1)[1], *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=clean_env(), start_new_session=True)
        subprocess.run([sys.executable, str(EXAMPLE / "bee.py"), "wait", "--url", self.url], check=True, timeout=30)

    def stamps(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/stamps", timeout=5).json()["stamps"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def bee_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Bee] = []

    def start(*args: str) -> Bee:
        b = Bee(tmp_path, *args)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def make_files(folder: Path, count: int, size: int = 6000) -> list[Path]:
    subprocess.run([sys.executable, str(EXAMPLE / "make_files.py"), str(folder), "--count", str(count), "--size",
                    str(size)], check=True, capture_output=True, timeout=60)
    return sorted(folder.iterdir())


def run_args(files: Path, store: Path, bee: Bee, *more: str) -> list[str]:
    return [str(BIN / "batchyard"), "run", str(files), "--processor", "swarm-upload", "--processors",
            str(EXAMPLE / "processors.py"), "--param", f"bee_url={bee.url}", "--store", str(store), *more]


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=clean_env(),
                          stdin=subprocess.DEVNULL)


def report(store: Path, out: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(EXAMPLE / "report.py"), "--store", str(store), "--output", str(out)],
                          capture_output=True, text=True, timeout=60, env=clean_env())
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def kill_run_when(args: list[str], tmp: Path, ready: Any) -> None:
    """Start ``batchyard run`` and kill -9 it once ``ready()`` holds."""
    with open(tmp / "killed-run.log", "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            wait_for(ready, timeout=60)
            assert proc.poll() is None, "the run ended before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()


def stored(store: Path) -> batchyard.BatchInfo | None:
    if not store.exists():
        return None
    s = batchyard.open_store(str(store))
    try:
        found = s.list_batches(limit=1)
        return found[0] if found else None
    finally:
        s.close()


# -- the README, as written ----------------------------------------------------------------------------


@pytest.mark.slow
def test_readme_commands(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    done = run_readme(EXAMPLE / "README.md", ws, clean_env(), replace={"1633": str(free_port())}, timeout=240)
    assert done.returncode == 0, done.stdout
    m = json.loads((ws / ".batchyard" / "swarm" / "manifest.json").read_text())
    assert (m["total_files"], m["failed"], m["status"]) == (25, [], "completed")
    assert sorted(u["filename"] for u in m["uploads"]) == [f"log_{n:03d}.txt" for n in range(1, 26)]
    assert m["cost_comparison"]["saved_percent"] == 96.0
    assert m["stamp"]["used_chunks"] == 75 and m["stamp"]["node"]["utilization"] == 75
    assert "25 files uploaded with stamp" in done.stdout and "96% saved" in done.stdout
    assert "cost 0.0131072 BZZ spent" in done.stdout
    assert "resource closed: 75 of 131072 used (0.0572%)" in done.stdout


# -- one stamp, across kill -9 -------------------------------------------------------------------------


def test_kill_9_mid_upload_then_the_resumed_batch_buys_no_second_stamp(tmp_path: Path, bee_factory: Any) -> None:
    bee = bee_factory("--usable-after", "0.5", "--upload-delay", "0.1")
    files = make_files(tmp_path / "files", 40)
    store = tmp_path / "store.db"
    args = run_args(tmp_path / "files", store, bee, "--parallel", "2", "--param", "preset=medium")

    def some_uploaded() -> bool:
        info = stored(store)
        return info is not None and info.items_succeeded >= 8

    kill_run_when(args, tmp_path, some_uploaded)
    assert len(bee.stamps()) == 1
    interrupted = stored(store)
    assert interrupted is not None and not interrupted.is_final and interrupted.items_succeeded < 40

    done = run(args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming {interrupted.batch_id}" in done.stderr
    stamps = bee.stamps()
    assert len(stamps) == 1, "the resumed batch bought a second stamp"
    final = stored(store)
    assert final is not None and final.status == "completed" and final.items_succeeded == 40
    assert final.cost_total == pytest.approx(1_000_000_000 * 2 ** 20 / 10 ** 16)  # one medium stamp, counted once
    assert final.resource is not None and final.resource.state["batch_id"] == stamps[0]["batchID"]

    m = report(store, tmp_path / "manifest.json")
    assert m["stamp_id"] == stamps[0]["batchID"] and m["total_files"] == 40
    names = [u["filename"] for u in m["uploads"]]
    assert sorted(names) == sorted(f.name for f in files) and len(set(names)) == 40  # every file, once
    for u in m["uploads"]:  # each reference fetches the file back from the node
        assert httpx.get(f"{bee.url}/bzz/{u['swarm_ref']}", timeout=5).content == \
            (tmp_path / "files" / u["filename"]).read_bytes()
    assert m["stamp"]["used_chunks"] >= m["stamp"]["node"]["utilization"] == 40 * 3
    assert m["cost_comparison"]["one_stamp_per_file"]["total"] == pytest.approx(40 * PRICE_SMALL)


def test_kill_9_while_the_stamp_becomes_usable_reuses_it(tmp_path: Path, bee_factory: Any) -> None:
    bee = bee_factory("--usable-after", "4")
    make_files(tmp_path / "files", 10)
    store = tmp_path / "store.db"
    args = run_args(tmp_path / "files", store, bee)
    kill_run_when(args, tmp_path, lambda: len(bee.stamps()) == 1)  # bought, not yet usable
    info = stored(store)
    assert info is not None and info.items_succeeded == 0
    assert info.resource is not None and info.resource.status == "setup"  # the purchase was checkpointed
    done = run(args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(bee.stamps()) == 1
    final = stored(store)
    assert final is not None and final.items_succeeded == 10
    assert final.cost_total == pytest.approx(PRICE_SMALL)  # paid once, though two setups saw the stamp


# -- a full stamp --------------------------------------------------------------------------------------


def test_a_full_stamp_fails_the_remaining_files_clearly(tmp_path: Path, bee_factory: Any) -> None:
    bee = bee_factory("--usable-after", "0.2", "--min-depth", "6")
    make_files(tmp_path / "files", 30)  # 6,000 bytes each: 2 chunks and a manifest entry
    store = tmp_path / "store.db"
    done = run(run_args(tmp_path / "files", store, bee, "--param", "depth=6", "--parallel", "4"))
    assert done.returncode == 1, done.stdout + done.stderr
    info = stored(store)
    assert info is not None and info.status == "completed"
    # 64 chunks: 21 files of 3 fit (63), the other 9 do not
    assert (info.items_succeeded, info.items_failed) == (21, 9)
    assert info.resource is not None and (info.resource.capacity, info.resource.used) == (64, 63)
    s = batchyard.open_store(str(store))
    try:
        failed = list(s.iter_items(info.batch_id, status="failed"))
    finally:
        s.close()
    for it in failed:
        assert it.attempts == 1  # a full stamp is not retried
        assert it.error is not None and it.error.type == "PermanentError"
        assert "is full (batch is overissued)" in it.error.message and it.payload["name"] in it.error.message
        assert "was not uploaded; a larger stamp holds more" in it.error.message
    m = report(store, tmp_path / "manifest.json")
    assert (m["total_files"], len(m["failed"])) == (21, 9)
    assert all("is full" in f["error"] for f in m["failed"])
    assert len(bee.stamps()) == 1
