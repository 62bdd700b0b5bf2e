"""Helpers for the acceptance tests: run the real ``batchyard`` CLI, poll, read outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent / "batchyard"

# Test processors, written to a file and loaded with ``--processors FILE`` (or imported by API tests).
PROCESSORS_SOURCE = textwrap.dedent('''
    """Processors used by the acceptance tests."""
    import os
    import time

    import batchyard
    from batchyard import PermanentError, RetryPolicy

    FAST = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1)


    def _log(item, name="log"):
        path = item.params.get(name) if isinstance(item.params, dict) else None
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{item.id} {item.attempt}\\n".encode())
            finally:
                os.close(fd)


    @batchyard.processor("record", description="Log the item id to params.log, sleep params.ms, return it.")
    def record(item, ctx):
        ms = item.params.get("ms", 0) if isinstance(item.params, dict) else 0
        time.sleep(float(ms) / 1000.0)
        _log(item)
        return {"id": item.id, "payload": item.payload}


    @batchyard.processor("fail-even", description="PermanentError for even integer payloads.")
    def fail_even(item, ctx):
        if int(item.payload) % 2 == 0:
            raise PermanentError(f"even: {item.payload}")
        return {"n": int(item.payload)}


    @batchyard.processor("ok-then-fail",
                         description="Items below params.ok succeed at once; the others sleep params.ms and fail.")
    def ok_then_fail(item, ctx):
        if int(item.payload) < int(item.params.get("ok", 0)):
            return {"n": int(item.payload)}
        time.sleep(float(item.params.get("ms", 0)) / 1000.0)
        raise PermanentError(f"no: {item.payload}")


    @batchyard.processor("flaky", description="Fails the first two attempts of every item.", retry=FAST)
    def flaky(item, ctx):
        _log(item)
        if item.attempt < 3:
            raise RuntimeError(f"transient failure on attempt {item.attempt}")
        return {"attempt": item.attempt}


    @batchyard.processor("flag-fail", description="Fails permanently while the file params.flag exists.")
    def flag_fail(item, ctx):
        _log(item)
        if int(item.payload) % 3 == 0 and os.path.exists(item.params["flag"]):
            raise PermanentError(f"flagged: {item.payload}")
        return {"n": int(item.payload)}


    @batchyard.processor("too-slow", description="Sleeps 5 s with a 0.3 s timeout.", timeout=0.3,
                         retry=RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.1))
    def too_slow(item, ctx):
        time.sleep(5)
        return {"late": True}
''')


def procs_file(tmp_path: Path) -> Path:
    path = tmp_path / "test_processors.py"
    path.write_text(PROCESSORS_SOURCE)
    return path


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("BATCHYARD_STORE", None)
    return {**env, **(extra or {})}


def cli(*args: Any, timeout: float = 60, input: str | None = None, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``batchyard ARGS`` to completion (stdin/stdout/stderr are pipes, so not a TTY)."""
    return subprocess.run([str(BIN), *map(str, args)], env=cli_env(env), capture_output=True, text=True,
                          timeout=timeout, input=input, cwd=cwd,
                          stdin=None if input is not None else subprocess.DEVNULL)


def cli_json(*args: Any, timeout: float = 60) -> Any:
    res = cli(*args, timeout=timeout)
    assert res.returncode == 0, f"batchyard {args} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def wait_for(predicate: Callable[[], Any], timeout: float = 15, interval: float = 0.05, what: str = "condition"
             ) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Running:
    """A ``batchyard run`` started in the background, with its output in files (so it never blocks)."""

    def __init__(self, args: list[str], workdir: Path, name: str) -> None:
        self.args = args
        self.out_path = workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"
        self._out = open(self.out_path, "w")  # noqa: SIM115
        self._err = open(self.err_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([str(BIN), *args], env=cli_env(), stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, start_new_session=True)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def batch_id(self, timeout: float = 15) -> str:
        """The id printed by ``created ...`` or ``resuming ...`` on stderr."""
        def find() -> str | None:
            for line in self.stderr.splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] in ("created", "resuming") and words[1].startswith("batch_"):
                    return words[1].rstrip(":")
            if self.proc.poll() is not None:
                raise AssertionError(f"run exited {self.proc.returncode} early:\n{self.stdout}\n{self.stderr}")
            return None
        return wait_for(find, timeout, what="the batch id on stderr")

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run did not exit within {timeout}s:\n{self.stdout}\n{self.stderr}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self._out.close()
        self._err.close()


def done(info: Any) -> int:
    return info.items_succeeded + info.items_failed + info.items_cancelled


def write_lines(path: Path, values: Any) -> Path:
    path.write_text("".join(f"{v}\n" for v in values))
    return path


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def log_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                item_id = line.split()[0]
                counts[item_id] = counts.get(item_id, 0) + 1
    return counts


def batch_ids(store_path: Path) -> list[str]:
    """Ids of the batches in a store file, newest first (read in-process: no CLI start-up)."""
    from batchyard.store.sqlite import SQLiteStore

    if not store_path.exists():
        return []
    s = SQLiteStore(store_path)
    try:
        return [b.batch_id for b in s.list_batches(limit=1000)]
    finally:
        s.close()
