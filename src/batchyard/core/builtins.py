"""Built-in processors: noop, sleep, sha256 and shell."""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import time
from typing import Any

from pydantic import BaseModel, Field

from batchyard.core.errors import PermanentError
from batchyard.core.processor import Context, Item, processor
from batchyard.core.retry import RetryPolicy

TAIL_CHARS = 2000


@processor("noop", description="Return the item's payload unchanged.")
def noop(item: Item, ctx: Context) -> Any:
    return item.payload


class SleepParams(BaseModel):
    ms: float = Field(10.0, ge=0, description="How long to sleep per item, in milliseconds.")


@processor("sleep", description="Sleep `ms` milliseconds per item (default 10), then return the payload.",
           params=SleepParams)
def sleep(item: Item, ctx: Context) -> Any:
    time.sleep(item.params.ms / 1000.0)
    return {"slept_ms": item.params.ms}


@processor("sha256", description="Item = a file path; result = its SHA-256 digest and size in bytes.")
def sha256(item: Item, ctx: Context) -> dict[str, Any]:
    path = item.payload.get("path") if isinstance(item.payload, dict) else item.payload
    if not isinstance(path, str):
        raise PermanentError(f"expected a file path, got {type(path).__name__}")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
            size = fh.tell()
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise PermanentError(f"{type(exc).__name__}: {path}") from exc
    return {"path": path, "sha256": digest.hexdigest(), "size": size}


class ShellParams(BaseModel):
    command: str = Field(..., description="Command template; {} is the item, {.} without extension, "
                                          "{/} basename, {//} dirname, {/.} basename without extension.")
    shell_timeout: float | None = Field(None, description="Seconds before the command is killed.")


def render_command(template: str, value: str) -> str:
    """Fill GNU-parallel style placeholders with the shell-quoted item value."""
    base = os.path.basename(value)
    repl = {
        "{}": value,
        "{.}": os.path.splitext(value)[0],
        "{/}": base,
        "{//}": os.path.dirname(value) or ".",
        "{/.}": os.path.splitext(base)[0],
    }
    out, i = [], 0
    placed = False
    while i < len(template):
        for key in ("{/.}", "{//}", "{/}", "{.}", "{}"):
            if template.startswith(key, i):
                out.append(shlex.quote(repl[key]))
                i += len(key)
                placed = True
                break
        else:
            out.append(template[i])
            i += 1
    if not placed:  # like GNU parallel: no placeholder means the item goes at the end
        out.append(" " + shlex.quote(value))
    return "".join(out)


@processor("shell", description="Run a command template per item ({} placeholders as in GNU parallel).",
           params=ShellParams, retry=RetryPolicy(max_attempts=1), unsafe=True)
def shell(item: Item, ctx: Context) -> dict[str, Any]:
    value = item.payload if isinstance(item.payload, str) else str(item.payload)
    cmd = render_command(item.params.command, value)
    env = {**os.environ, "BATCHYARD_BATCH_ID": ctx.batch_id, "BATCHYARD_ITEM_ID": ctx.item_id,
           "BATCHYARD_IDEMPOTENCY_KEY": ctx.idempotency_key}
    # A session of its own, so a timeout kills the command's children too, not only /bin/sh.
    with subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=item.params.shell_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TimeoutError(f"command timed out after {item.params.shell_timeout}s: {cmd}") from None
    result = {
        "command": cmd,
        "exit_code": proc.returncode,
        "stdout": stdout.decode("utf-8", "replace")[-TAIL_CHARS:],
        "stderr": stderr.decode("utf-8", "replace")[-TAIL_CHARS:],
    }
    if proc.returncode != 0:
        raise CommandFailed(result)
    return result


class CommandFailed(Exception):
    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result
        tail = result["stderr"].strip().splitlines()[-1:] or [""]
        super().__init__(f"exit code {result['exit_code']}: {tail[0]}")
