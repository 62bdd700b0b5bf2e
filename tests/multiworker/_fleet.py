"""Worker processes on one PostgreSQL store, each as if on a machine of its own, and what they recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROCESSORS = str(HERE / "recording.py")
BIN = Path(sys.executable).parent / "batchyard"


@dataclass
class Run:
    """One execution of an item, as the processor recorded it."""

    pid: int
    start: float
    end: float | None  # None: it never finished (its process was killed)


@dataclass
class Records:
    """Every run of every item, from the processes' own files: (batch id, item id) -> runs."""

    runs: dict[tuple[str, str], list[Run]] = field(default_factory=lambda: defaultdict(list))

    def starts(self, batch_id: str) -> list[tuple[float, int]]:
        """(start time, pid) of every run of the batch's items, in time order."""
        return sorted((r.start, r.pid) for (b, _), runs in self.runs.items() if b == batch_id for r in runs)


def read_records(folder: Path) -> Records:
    out = Records()
    for path in folder.glob("*.log"):
        open_runs: dict[tuple[str, str, float], Run] = {}
        for line in path.read_text().splitlines():
            kind, batch, item, t, pid, *rest = line.split(",")
            if kind == "S":
                run = Run(int(pid), float(t), None)
                open_runs[(batch, item, round(float(t), 6))] = run
                out.runs[(batch, item)].append(run)
            else:
                open_runs.pop((batch, item, round(float(rest[0]), 6))).end = float(t)
    return out


@dataclass
class Fleet:
    """``batchyard worker`` processes started by a test; all are stopped (or killed) at its end."""

    url: str
    records: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, host: str | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "BATCHYARD_TEST_RECORD_DIR": str(self.records)}
        cmd = [sys.executable, str(HERE / "as_machine.py"), host or f"machine-{name}", "worker", "--store", self.url,
               "--processors", PROCESSORS, "--name", name, "--log-level", "warning", *args]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs[name] = proc
        return proc

    def stop(self, timeout: float = 30) -> dict[str, tuple[int, str]]:
        """SIGTERM to every worker still running; (exit code, stderr) of each."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        result = {}
        for name, proc in self.procs.items():
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            result[name] = (proc.returncode, err.decode(errors="replace"))
        return result


def wait_for(what: Callable[[], object], timeout: float, message: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {message}")
        time.sleep(every)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})
