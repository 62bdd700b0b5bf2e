"""Inputs and outputs stream: a million-line input is read and validated in flat memory, and exports do
not grow with the batch. Peak RSS is measured in a fresh subprocess, as VmHWM from /proc: getrusage's
ru_maxrss survives exec, so a child forked from a pytest worker that has grown would report the worker's size."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _io_support import HERE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

N = 1_000_000
RSS_LIMIT_MB = 150

READ = textwrap.dedent("""
    import json, sys

    def peak_mb():  # VmHWM: the peak RSS since exec
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    sys.path.insert(0, {here!r})
    import sample_processors
    from batchyard.io.inputs import open_input

    source = open_input({path!r}, processor=sample_processors.{proc})
    n = keyed = 0
    for key, payload in source.items():
        n += 1
        keyed += key is not None
    print(json.dumps({{"n": n, "keyed": keyed,
                      "rss_mb": peak_mb()}}))
""")


def _run(code: str, timeout: float = 100) -> dict:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _write_lines(path: Path, head: str, line: str, n: int = N, tail: str = "") -> None:
    with open(path, "w") as fh:
        fh.write(head)
        step = 10_000
        for start in range(0, n, step):
            fh.write("".join(line.format(i=i) for i in range(start, min(n, start + step))))
        fh.write(tail)


def test_million_row_csv_is_validated_in_flat_memory(tmp_path: Path) -> None:
    src = tmp_path / "big.csv"
    _write_lines(src, "upc,qty,note\n", '{i:012d},{i},"note, with comma {i}"\n')
    out = _run(READ.format(here=str(HERE), path=str(src), proc="qty"))
    assert out["n"] == N
    assert out["rss_mb"] < RSS_LIMIT_MB, out


def test_million_line_openai_jsonl_checks_unique_ids_in_flat_memory(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    line = ('{{"custom_id": "request-{i}", "method": "POST", "url": "/v1/chat/completions", '
            '"body": {{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "describe image {i}"}}]}}}}\n')
    _write_lines(src, "", line)
    out = _run(READ.format(here=str(HERE), path=str(src), proc="upc"))
    assert out["n"] == N and out["keyed"] == N
    assert out["rss_mb"] < RSS_LIMIT_MB, out


def test_million_item_json_array_streams(tmp_path: Path) -> None:
    src = tmp_path / "big.json"
    _write_lines(src, "[", '{{"id": {i}, "name": "photo-{i}.jpg"}},\n', N - 1, '{"id": -1, "name": "last"}]')
    out = _run(READ.format(here=str(HERE), path=str(src), proc="upc"))
    assert out["n"] == N
    assert out["rss_mb"] < RSS_LIMIT_MB, out


EXPORT = textwrap.dedent("""
    import io, json, sys

    def peak_mb():  # VmHWM: the peak RSS since exec
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    from batchyard.store.sqlite import SQLiteStore
    from batchyard.io import outputs
    from batchyard.io.manifest import write_manifest

    class Sink(io.TextIOBase):
        def __init__(self):
            self.n = 0
        def write(self, text):
            self.n += len(text)
            return len(text)

    store = SQLiteStore({db!r})
    sink = Sink()
    if {fmt!r} == "manifest":
        n = write_manifest(store, {batch!r}, sink)
    else:
        n = outputs.write_results(store, {batch!r}, sink, {fmt!r})
    print(json.dumps({{"n": n, "bytes": sink.n,
                      "rss_mb": peak_mb()}}))
""")


def test_exports_stream_whatever_the_batch_size(tmp_path: Path) -> None:
    """Exporting 50,000 items takes no more memory than exporting 2,000 (a non-streaming export of the
    large batch would hold ~50 MB of items)."""
    from batchyard.core.engine import Engine
    from batchyard.core.models import BatchSpec
    from batchyard.store.sqlite import SQLiteStore

    db = tmp_path / "s.db"
    store = SQLiteStore(db)
    try:
        engine = Engine(store)
        ids = {}
        for n in (2_000, 50_000):
            items = ((None, {"name": f"file-{i}.txt", "size": i, "note": "x" * 200}) for i in range(n))
            info = engine.submit(BatchSpec(processor="noop", parallel=16), items)
            assert engine.run(info.batch_id, interval=0.05).items_succeeded == n
            ids[n] = info.batch_id
    finally:
        store.close()
    for fmt in ("json", "csv"):
        small = _run(EXPORT.format(db=str(db), batch=ids[2_000], fmt=fmt))
        large = _run(EXPORT.format(db=str(db), batch=ids[50_000], fmt=fmt))
        assert (small["n"], large["n"]) == (2_000, 50_000)
        assert large["bytes"] > 20 * small["bytes"]
        assert large["rss_mb"] - small["rss_mb"] < 20, (fmt, small, large)
