"""What the examples' end-to-end tests share: a workspace where the READMEs' commands run as written, a
``batchyard serve`` with an adapter mounted, the seeds' documents (their code and example JSON), and the
recursive comparison of response keys with the seeds' examples."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
# The seeds' own documents, when this checkout sits next to them (the copies here must not drift from them).
SEEDS = REPO.parent / "shared" / "seeds"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's commands first on PATH (as after ``. .venv/bin/activate``), without
    the caller's BATCHYARD_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHYARD_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def workspace(tmp_path: Path) -> Path:
    """A directory that looks like the repository root to the READMEs' commands (``examples/...`` paths)
    and keeps what they write (``.batchyard/...``) out of the checkout."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "examples").symlink_to(REPO / "examples", target_is_directory=True)
    return ws


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def run_readme(readme: Path, cwd: Path, env: dict[str, str], replace: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Every ``sh`` block of ``readme``, in order, as one bash script (``set -euo pipefail``) in ``cwd``.

    ``replace`` rewrites text before running (fixed ports to free ones, so tests run side by side); anything
    the script left running in the background is stopped at the end."""
    script = "\n".join(code_blocks(readme.read_text(), "sh"))
    for old, new in (replace or {}).items():
        script = script.replace(old, new)
    (cwd / "readme.sh").write_text("set -euo pipefail\n" + script)
    log = cwd / "readme.log"
    with open(log, "wb") as fh:  # a file, not a pipe: a server left in the background must not hold us up
        proc = subprocess.Popen(["bash", "readme.sh"], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout)
            note = ""
        except subprocess.TimeoutExpired:
            note = f"\n[timed out after {timeout}s]"
        finally:
            with contextlib.suppress(ProcessLookupError):  # the script's session: what it left running goes too
                os.killpg(proc.pid, signal.SIGTERM)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(errors="replace") + note, "")


class Serve:
    """``batchyard serve`` with an example's processors and adapter, on a free port; log in a file."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str], ready_path: str = "/api/v1/processors",
                 port: int | None = None, name: str = "serve") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        self._fh = open(self.log, "ab")  # noqa: SIM115
        self.p = subprocess.Popen([str(BIN / "batchyard"), "serve", "--port", str(self.port), "--log-level",
                                   "warning", *args], cwd=tmp, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"batchyard serve exited with {self.p.returncode}:\n{self.output()}")
            try:
                httpx.get(self.url + ready_path, timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"batchyard serve did not answer:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is stopped gracefully."""
        self.p.kill()
        self.p.wait(10)
        self._fh.close()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._fh.close()


def wait_for(predicate: Callable[[], T], timeout: float = 30, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def run_python(code: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script with the venv's Python (where the seeds' clients get ``requests``)."""
    script = cwd / f"snippet_{abs(hash(code))}.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# -- the seeds' documents ------------------------------------------------------------------------------


def seed_copy_matches(copy: Path, pattern: str) -> bool | None:
    """Whether our copy of a seed document is the seed's own text (None: the seeds are not next to us)."""
    found = sorted(SEEDS.glob(pattern)) if SEEDS.is_dir() else []
    if not found:
        return None
    return found[0].read_text() == copy.read_text()


def example_json(doc: str, heading: str, label: str = "**Response**") -> Any:
    """The JSON example under ``label`` in the section whose heading line is ``heading``.

    ``[...]`` (the documents' "and so on") reads as an empty list: no keys to compare below it."""
    start = doc.index(heading + "\n")
    end = doc.find("\n#", start + len(heading))
    section = doc[start:end if end != -1 else len(doc)]
    after = section[section.index(label):] if label else section
    block = code_blocks(after, "json")[0]
    return json.loads(block.replace("[...]", "[]"))


def key_differences(actual: Any, example: Any, where: str = "$") -> list[str]:
    """Every place where ``actual``'s keys differ from ``example``'s, recursively (lists: element against
    element, the example's first element standing for all of them when it has one)."""
    found: list[str] = []
    if isinstance(example, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {type(actual).__name__}"]
        missing, extra = example.keys() - actual.keys(), actual.keys() - example.keys()
        if missing:
            found.append(f"{where}: missing {sorted(missing)}")
        if extra:
            found.append(f"{where}: not in the seed {sorted(extra)}")
        for key in example.keys() & actual.keys():
            found += key_differences(actual[key], example[key], f"{where}.{key}")
    elif isinstance(example, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {type(actual).__name__}"]
        if example:
            for i, value in enumerate(actual):
                found += key_differences(value, example[0], f"{where}[{i}]")
    return found
