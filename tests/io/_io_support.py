"""Helpers for the input/output tests: the CLI with a store, local servers on free loopback ports."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PROCS = HERE / "sample_processors.py"

_spec = importlib.util.spec_from_file_location("_batchyard_root_conftest", HERE.parent / "conftest.py")
assert _spec is not None and _spec.loader is not None
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
run_cli = _root.run_cli

SEED_004_CSV = """\
master_file,dub_file,methods,ai_model,description,tags
/mnt/data/audio/master1.wav,/mnt/data/audio/dub1.wav,"mfcc,ai",wav2vec2,Daily batch item 1,"daily,batch"
/mnt/data/audio/master2.wav,/mnt/data/audio/dub2.wav,"onset,spectral",,Daily batch item 2,"daily,batch"
/mnt/data/audio/master3.wav,/mnt/data/audio/dub3.wav,ai,wav2vec2,Daily batch item 3,"daily,batch,priority"
"""


def cli(*args: Any, store: Path | None = None, env: dict[str, str] | None = None, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``batchyard ARGS --processors sample_processors.py [--store STORE]`` (processors only where accepted)."""
    argv = [str(a) for a in args]
    if argv and argv[0] in ("run", "validate", "retry", "processors"):
        argv += ["--processors", str(PROCS)]
    if store is not None:
        argv += ["--store", str(store)]
    return run_cli(*argv, env=env, input=input, timeout=timeout)


def ok(res: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert res.returncode == code, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


def batch_ids(store: Path) -> list[str]:
    res = ok(run_cli("list", "--json", "--store", str(store)))
    return [b["batch_id"] for b in json.loads(res.stdout)]


def read_csv_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def start_server(argv: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, proc)
    except Exception:
        stop_server(proc)
        raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()[-3000:]}") from None
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def cloud_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_"))}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "NO_PROXY": "127.0.0.1,localhost",
                # gcsfs would otherwise probe the bucket type over gRPC, which the emulator does not speak.
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})
    env.update(extra)
    return env
