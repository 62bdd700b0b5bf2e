"""The built-in processors: noop, sleep, sha256 and shell."""

from __future__ import annotations

import hashlib
import logging
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from batchyard.core.builtins import CommandFailed, render_command
from batchyard.core.errors import PermanentError
from batchyard.core.processor import Context, Item, get


def run(name: str, payload: Any, params: dict[str, Any] | None = None) -> Any:
    proc = get(name)
    return proc(Item("1", 1, payload, 1, params or {}, proc), Context("batch_t", "1", 1, logging.getLogger("t")))


def test_noop_returns_the_payload() -> None:
    assert run("noop", {"a": [1, 2]}) == {"a": [1, 2]}
    assert run("noop", "text") == "text"
    assert get("noop").mode == "thread"


def test_sleep_params() -> None:
    proc = get("sleep")
    assert proc.params_model is not None
    assert proc.params_model().ms == 10.0  # the documented default
    t = time.perf_counter()
    assert run("sleep", {}, {"ms": 60}) == {"slept_ms": 60}
    assert time.perf_counter() - t >= 0.055
    assert run("sleep", {"ms": 0}, {"ms": 500}) == {"slept_ms": 0}  # the item's own value wins
    with pytest.raises(ValidationError):
        run("sleep", {"ms": -1})
    with pytest.raises(ValidationError):
        run("sleep", {"ms": "slow"})


def test_sha256_of_a_file(tmp_path: Path) -> None:
    data = b"batchyard\n" * 100_000 + b"tail"  # more than one read block
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    expected = {"path": str(f), "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert run("sha256", str(f)) == expected
    assert run("sha256", {"path": str(f)}) == expected
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert run("sha256", str(empty))["sha256"] == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("payload", ["MISSING", "DIR", 42, {"path": None}, None])
def test_sha256_bad_paths_are_permanent(tmp_path: Path, payload: Any) -> None:
    if payload == "MISSING":
        payload = str(tmp_path / "nope.txt")
    elif payload == "DIR":
        payload = str(tmp_path)
    with pytest.raises(PermanentError):
        run("sha256", payload)


@pytest.mark.parametrize(("template", "value", "expected"), [
    ("cat {}", "dir/file.tar.gz", "cat dir/file.tar.gz"),
    ("echo {.}", "dir/file.tar.gz", "echo dir/file.tar"),
    ("echo {/}", "dir/sub/file.txt", "echo file.txt"),
    ("echo {//}", "dir/sub/file.txt", "echo dir/sub"),
    ("echo {/.}", "dir/sub/file.txt", "echo file"),
    ("echo {.}", "dir.d/file", "echo dir.d/file"),
    ("convert {} {.}.png", "img.jpg", "convert img.jpg img.png"),
    ("mv {} out/{/.}.bak", "a/b.c", "mv a/b.c out/b.bak"),
    ("gzip", "my file.txt", "gzip 'my file.txt'"),  # no placeholder: the item goes at the end
    ("echo {}", "it's $(rm -rf x)", "echo " + shlex.quote("it's $(rm -rf x)")),
    ("echo {/}", "a dir/b c.txt", "echo 'b c.txt'"),
    ("echo {//}", "a dir/b c.txt", "echo 'a dir'"),
    ("echo {} {}", "x", "echo x x"),
    ("echo {x}", "v", "echo {x} v"),
    pytest.param("echo {//}", "file.txt", "echo ."),
])
def test_render_command(template: str, value: str, expected: str) -> None:
    assert render_command(template, value) == expected


def test_render_command_quotes_every_placeholder() -> None:
    value = "we ird/na me;.tx t"
    cmd = render_command("x {} {.} {/} {//} {/.}", value)
    assert shlex.split(cmd) == ["x", value, "we ird/na me;", "na me;.tx t", "we ird", "na me;"]


def test_shell_runs_the_command() -> None:
    out = run("shell", "hello world", {"command": "printf '%s|%s' {} \"$BATCHYARD_IDEMPOTENCY_KEY\""})
    assert out["exit_code"] == 0 and out["stdout"] == "hello world|batch_t:1"
    assert out["command"] == "printf '%s|%s' 'hello world' \"$BATCHYARD_IDEMPOTENCY_KEY\""
    assert get("shell").unsafe and get("shell").retry.max_attempts == 1


def test_shell_failure_keeps_the_output() -> None:
    with pytest.raises(CommandFailed) as exc:
        run("shell", "x", {"command": "echo out; echo oops >&2; exit 3"})
    assert exc.value.result["exit_code"] == 3
    assert exc.value.result["stdout"] == "out\n" and "oops" in exc.value.result["stderr"]
    assert "exit code 3" in str(exc.value) and "oops" in str(exc.value)


def test_shell_timeout() -> None:
    with pytest.raises(TimeoutError, match="timed out"):
        run("shell", "x", {"command": "sleep 3; echo {}", "shell_timeout": 0.2})


def test_shell_timeout_kills_the_whole_command() -> None:
    import random

    import psutil

    token = f"3.{random.randrange(10**6, 10**7)}"
    try:
        with pytest.raises(TimeoutError):
            run("shell", "x", {"command": f"sleep {token}; echo {{}}", "shell_timeout": 0.2})
        time.sleep(0.2)
        left = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", token]]
        assert left == []
    finally:
        for p in psutil.process_iter(["cmdline"]):
            if p.info["cmdline"] == ["sleep", token]:
                p.kill()
