"""Run a real ``batchyard serve`` (and ``batchyard worker``) in subprocesses on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "batchyard"
PROCS = Path(__file__).with_name("procs.py")
API = "/api/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A ``batchyard`` subprocess whose output goes to a log file (shown when a test fails)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen([str(BIN), *args], stdout=self._fh, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.p.wait(timeout)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._fh.close()


class Server(Proc):
    def __init__(self, store: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = store
        super().__init__(["serve", "--port", str(self.port), "--store", str(store), "--processors", str(PROCS),
                          "--log-level", "warning", *extra], log)
        self._ready()

    def _ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"batchyard serve exited with {self.p.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + API + "/health", timeout=1).status_code in (200, 503):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"batchyard serve did not answer within {timeout}s:\n{self.output()}")


def wait_for(predicate, timeout: float = 10, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
