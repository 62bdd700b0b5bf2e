"""The remote CLI (``--url``): the real ``batchyard`` commands in subprocesses against a real ``batchyard serve``,
printing what the same commands print on the local store; and the client's API key, as a capture server sees it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import BIN, cli, cli_env, procs_file, wait_for, write_lines

from batchyard import AsyncClient, Client
from batchyard.client import ForbiddenError, RateLimitedError, UnauthorizedError

# The server tests' helper that runs ``batchyard serve`` on a free port (tests/server is not on sys.path here).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from _serve_support import API, Server, free_port

GOOD_CSV = "master_file,dub_file,methods\nm1.wav,d1.wav,mfcc\nm2.wav,d2.wav,\"mfcc,ai\"\n"
MIXED_CSV = GOOD_CSV + "fail.wav,d3.wav,onset\n"


@pytest.fixture(autouse=True)
def _no_ambient_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own BATCHYARD_URL / BATCHYARD_API_KEY would turn the local commands here into remote ones.
    monkeypatch.delenv("BATCHYARD_URL", raising=False)
    monkeypatch.delenv("BATCHYARD_API_KEY", raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with embedded workers, the server tests' processors and the acceptance tests' ones."""
    d = tmp_path_factory.mktemp("remote")
    s = Server(d / "store.db", d / "server.log", "--workers", "4", "--processors", str(procs_file(d)))
    yield s
    s.stop()


def remote(server: Server, *args: Any, **kw: Any) -> subprocess.CompletedProcess[str]:
    return cli(*args, "--url", server.url, **kw)


def local(server: Server, *args: Any) -> subprocess.CompletedProcess[str]:
    """The same command on the server's store file, without the server."""
    return cli(*args, "--store", server.store)


def submit(server: Server, path: Path, *args: Any, rc: int = 0) -> tuple[str, subprocess.CompletedProcess[str]]:
    res = remote(server, "submit", path, *args)
    assert res.returncode == rc, f"{res.stdout}\n{res.stderr}"
    batch_id, status = res.stdout.splitlines()[0].split()[:2]
    assert batch_id.startswith("batch_") and status in ("pending", "running"), res.stdout
    assert f"created {batch_id}: " in res.stderr
    return batch_id, res


def get(server: Server, batch_id: str) -> Any:
    with Client(server.url) as c:
        return c.get_batch(batch_id)


def settled(server: Server, batch_id: str) -> Any:
    """Wait until no item of the batch is in flight (a pause lets running items finish)."""
    return wait_for(lambda: (b := get(server, batch_id)).items_running == 0 and b, what="in-flight items to end")


# -- submit ------------------------------------------------------------------------------------------------------


def test_submit_csv_and_wait_exits_like_run(server: Server, tmp_path: Path) -> None:
    good, mixed = tmp_path / "good.csv", tmp_path / "mixed.csv"
    good.write_text(GOOD_CSV)
    mixed.write_text(MIXED_CSV)

    batch_id, res = submit(server, good, "--processor", "sync-analyze", "--wait")
    assert res.stdout.splitlines()[1:] == local(server, "status", batch_id).stdout.splitlines()  # ends as status
    assert "2 succeeded, 0 failed" in res.stdout

    batch_id, res = submit(server, mixed, "-p", "sync-analyze", "--wait", rc=1)  # some failed: 1, as run
    assert "2 succeeded, 1 failed" in res.stdout
    assert get(server, batch_id).status == "completed"


def test_submit_sends_every_option(server: Server, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "ids.txt", range(5))
    batch_id, res = submit(server, src, "-p", "slow", "--params-json", '{"ms": 1, "flag": "none"}',
                           "--param", "ms=2", "--parallel", "3", "--priority", "high", "--tag", "a", "--tag", "b",
                           "--description", "from the CLI", "--max-failures", "4", "--no-start")
    assert res.stdout.splitlines() == [f"{batch_id} pending"]  # no --wait: the id and status, nothing more
    b = get(server, batch_id)
    assert (b.status, b.priority, b.parallel, b.tags, b.description) == ("pending", "high", 3, ["a", "b"],
                                                                         "from the CLI")
    assert b.params == {"ms": 2, "flag": "none"} and b.failure_policy.max_failures == 4 and b.items_total == 5

    started = remote(server, "start", batch_id)
    assert started.returncode == 0 and started.stdout == f"{batch_id} running\n"
    wait_for(lambda: get(server, batch_id).status == "completed", what="the batch to complete")


def test_submit_checks_input_on_the_server(server: Server, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(GOOD_CSV)
    bad.write_text("master_file,dub_file,methods\nm1.wav,d1.wav,mfcc\nm2.wav,,nope\n")
    before = len(Client(server.url).list_batches(limit=1000).batches)

    dry = remote(server, "submit", good, "-p", "sync-analyze", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == "dry run: 2 items from good.csv (csv) would run through 'sync-analyze'; nothing was created\n"

    for extra in ((), ("--dry-run",)):
        res = remote(server, "submit", bad, "-p", "sync-analyze", *extra)
        assert res.returncode == 2, res.stderr
        assert "line 3" in res.stdout and "methods" in res.stdout  # every problem with its line, as validate
        assert "Traceback" not in res.stderr
    assert len(Client(server.url).list_batches(limit=1000).batches) == before  # nothing was created


def test_submit_needs_a_server(tmp_path: Path) -> None:
    res = cli("submit", write_lines(tmp_path / "x.txt", [1]), "-p", "noop")
    assert res.returncode == 2
    assert "--url" in res.stderr and "BATCHYARD_URL" in res.stderr


# -- reading and acting: the same output as on the local store ----------------------------------------------------


def test_status_and_list_print_what_the_local_commands_print(server: Server, tmp_path: Path) -> None:
    ids = [submit(server, write_lines(tmp_path / f"in{i}.txt", range(i + 2)), "-p", "record", "--wait")[0]
           for i in range(2)]
    for args in (("status", ids[0]), ("status", ids[0], "--json"), ("list", "--processor", "record"),
                 ("list", "--processor", "record", "--json")):
        there, here = remote(server, *args), local(server, *args)
        assert there.returncode == here.returncode == 0, there.stderr
        assert there.stdout == here.stdout, args
    assert [b["batch_id"] for b in json.loads(remote(server, "list", "--processor", "record", "--json").stdout)] \
        == ids[::-1]


def test_pause_resume_cancel_and_watch(server: Server, tmp_path: Path) -> None:
    batch_id, _ = submit(server, write_lines(tmp_path / "ids.txt", range(30)), "-p", "slow", "--param", "ms=1000",
                         "--parallel", "1")

    paused = remote(server, "pause", batch_id)
    assert paused.returncode == 0 and paused.stdout == f"{batch_id} paused (user)\n", paused.stderr
    again = remote(server, "pause", batch_id)
    assert again.returncode == 1 == local(server, "pause", batch_id).returncode  # as the local command
    assert again.stderr.startswith("error: invalid_transition: ") and len(again.stderr.splitlines()) == 1
    settled(server, batch_id)
    assert remote(server, "status", batch_id).stdout == local(server, "status", batch_id).stdout
    assert "  paused: user" in local(server, "status", batch_id).stdout

    # Ctrl-C stops watching, not the batch
    watcher = subprocess.Popen([str(BIN), "watch", batch_id, "--url", server.url], env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert watcher.stderr is not None
    assert watcher.stderr.readline().startswith(f"{batch_id} paused ")  # the first progress line: it is following
    watcher.send_signal(signal.SIGINT)
    _, tail = watcher.communicate(timeout=15)
    assert watcher.returncode == 130
    assert f"stopped watching {batch_id}" in tail and "Traceback" not in tail
    assert get(server, batch_id).status == "paused"

    resumed = remote(server, "resume", batch_id)
    assert resumed.returncode == 0 and resumed.stdout == f"{batch_id} running\n"
    cancelled = remote(server, "cancel", batch_id)
    assert cancelled.returncode == 0 and cancelled.stdout in (f"{batch_id} cancelling\n", f"{batch_id} cancelled\n")

    watched = remote(server, "watch", batch_id)
    assert watched.returncode == 1  # cancelled: exit as run does
    assert watched.stdout == local(server, "status", batch_id).stdout
    assert watched.stdout.startswith(f"{batch_id} cancelled")


def test_watch_follows_a_batch_to_its_end_remotely_and_locally(server: Server, tmp_path: Path) -> None:
    batch_id, _ = submit(server, write_lines(tmp_path / "ids.txt", range(40)), "-p", "slow", "--param", "ms=20",
                         "--parallel", "2", "--no-start")
    # the local watch polls the store that the server's workers write to
    watchers = [subprocess.Popen([str(BIN), "watch", batch_id, *where], env=cli_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
                for where in (("--url", server.url), ("--store", str(server.store)))]
    for w in watchers:  # both follow the pending batch before it starts
        assert w.stderr is not None and w.stderr.readline().startswith(f"{batch_id} pending 0/40")
    assert remote(server, "start", batch_id).returncode == 0
    outputs = [w.communicate(timeout=60) for w in watchers]

    status = local(server, "status", batch_id).stdout
    for w, (out, progress) in zip(watchers, outputs, strict=True):
        assert w.returncode == 0, progress
        assert out == status  # ends with what status shows
        assert f"{batch_id} completed 40/40 (100.0%) ok=40 failed=0" in progress
    assert "40 succeeded, 0 failed" in status


def test_retry_reruns_failed_items_on_the_server(server: Server, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    batch_id, res = submit(server, write_lines(tmp_path / "n.txt", range(1, 10)), "-p", "flag-fail",
                           "--param", f"flag={flag}", "--wait", rc=1)
    assert "6 succeeded, 3 failed" in res.stdout  # 3, 6 and 9 fail while the flag is up

    flag.unlink()
    retried = remote(server, "retry", batch_id)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"{batch_id} completed") and "9 succeeded, 0 failed" in retried.stdout
    assert local(server, "status", batch_id).stdout.startswith(retried.stdout)  # run's summary: status, less details


def test_results_are_the_local_export(server: Server, tmp_path: Path) -> None:
    batch_id, _ = submit(server, write_lines(tmp_path / "n.txt", range(1, 7)), "-p", "fail-even", "--wait", rc=1)

    there, here = tmp_path / "remote.csv", tmp_path / "local.csv"
    r, lo = remote(server, "results", batch_id, "--format", "csv", "-o", there), \
        local(server, "results", batch_id, "--format", "csv", "-o", here)
    assert r.returncode == lo.returncode == 0, r.stderr
    assert there.read_bytes() == here.read_bytes() and there.read_text().count("\n") == 7
    assert r.stderr == f"wrote 6 results to {there} (csv)\n" and lo.stderr == f"wrote 6 results to {here} (csv)\n"
    assert not (tmp_path / "remote.csv.partial").exists()

    for args in (("results", batch_id), ("results", batch_id, "--format", "jsonl", "--errors-only")):  # to stdout
        r, lo = remote(server, *args), local(server, *args)
        assert r.returncode == lo.returncode == 0, r.stderr
        assert r.stdout == lo.stdout, args
    assert json.loads(r.stdout.splitlines()[0])["status"] == "failed"

    failed = remote(server, "results", batch_id, "--errors-only", "-o", tmp_path / "errors.jsonl")
    assert failed.stderr == f"wrote 3 failed items to {tmp_path / 'errors.jsonl'} (jsonl)\n"
    manifest = remote(server, "results", batch_id, "--manifest", tmp_path / "m.json")
    assert manifest.returncode == 2 and "--manifest" in manifest.stderr


# -- where the server is, and when it says no --------------------------------------------------------------------


def test_batchyard_url_from_the_environment(server: Server, tmp_path: Path) -> None:
    src = write_lines(tmp_path / "ids.txt", range(3))
    res = cli("submit", src, "-p", "noop", "--wait", env={"BATCHYARD_URL": server.url}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    batch_id = res.stdout.split()[0]
    status = cli("status", batch_id, env={"BATCHYARD_URL": server.url}, cwd=tmp_path)
    assert status.returncode == 0 and status.stdout == local(server, "status", batch_id).stdout
    assert not (tmp_path / ".batchyard").exists()  # no local store was made


def test_an_unreachable_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    src = write_lines(tmp_path / "x.txt", [1])
    for args in (("status",), ("list",), ("pause", "batch_x"), ("watch", "batch_x"), ("results", "batch_x"),
                 ("submit", src, "-p", "noop")):
        res = cli(*args, "--url", url)
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach {url}: "), (args, res.stderr)


def test_an_unknown_batch_gives_the_servers_code_and_message(server: Server) -> None:
    answer = httpx.get(f"{server.url}{API}/batches/batch_nope", timeout=10)
    assert answer.status_code == 404
    error = answer.json()["error"]
    for args in (("status", "batch_nope"), ("cancel", "batch_nope"), ("watch", "batch_nope"),
                 ("results", "batch_nope", "--format", "csv")):
        res = remote(server, *args)
        assert res.returncode == 2, args
        assert res.stderr == f"error: {error['code']}: {error['message']}\n", args
        assert res.stdout == ""


# -- the API key, as a server receives it -------------------------------------------------------------------------


class Capture:
    """A tiny HTTP server that records each request's headers and gives one set answer (an error)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.status, self.headers = 401, {}
        self.error = {"code": "invalid_api_key", "message": "unknown API key"}
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                capture.requests.append((self.command, self.path, dict(self.headers.items())))
                body = json.dumps({"error": {**capture.error, "details": None}}).encode()
                self.send_response(capture.status)
                for k, v in {"Content-Type": "application/json", **capture.headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def authorizations(self) -> list[str | None]:
        return [h.get("Authorization") for _, _, h in self.requests]


@pytest.fixture
def capture() -> Iterator[Capture]:
    c = Capture()
    yield c
    c.httpd.shutdown()
    c.httpd.server_close()


def test_client_sends_the_api_key_on_every_request(capture: Capture, tmp_path: Path) -> None:
    with Client(capture.url, api_key="sk-test") as c:
        with pytest.raises(UnauthorizedError) as exc:
            c.get_batch("batch_1")
        assert (exc.value.status_code, exc.value.code, exc.value.message) == (401, "invalid_api_key",
                                                                              "unknown API key")
        with pytest.raises(UnauthorizedError):
            c.upload(write_lines(tmp_path / "x.txt", [1]), "noop")
        with pytest.raises(UnauthorizedError):
            c.wait("batch_1")  # the event stream
        with pytest.raises(UnauthorizedError):
            c.results("batch_1", tmp_path / "r.json")
    paths = [p.split("?")[0] for _, p, _ in capture.requests]
    assert paths == [f"{API}/batches/batch_1", f"{API}/batches/upload", f"{API}/batches/batch_1/events",
                     f"{API}/batches/batch_1/results"]
    assert capture.authorizations() == ["Bearer sk-test"] * 4
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.json.partial").exists()


def test_the_api_key_comes_from_the_environment(capture: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(capture.url) as c, pytest.raises(UnauthorizedError):
        c.health()
    monkeypatch.setenv("BATCHYARD_API_KEY", "sk-env")
    with Client(capture.url) as c, pytest.raises(UnauthorizedError):
        c.health()
    with Client(capture.url, api_key="sk-arg") as c, pytest.raises(UnauthorizedError):
        c.health()

    async def with_async() -> None:
        async with AsyncClient(capture.url) as c:
            with pytest.raises(UnauthorizedError):
                await c.get_batch("batch_1")
            with pytest.raises(UnauthorizedError):
                await c.wait("batch_1")

    asyncio.run(with_async())
    assert capture.authorizations() == [None, "Bearer sk-env", "Bearer sk-arg", "Bearer sk-env", "Bearer sk-env"]


def test_forbidden_and_rate_limited_are_typed(capture: Capture) -> None:
    capture.status, capture.error = 403, {"code": "forbidden", "message": "this key may not cancel"}
    with Client(capture.url, api_key="k") as c:
        with pytest.raises(ForbiddenError) as denied:
            c.cancel("batch_1")
        assert denied.value.code == "forbidden"

        capture.status, capture.headers = 429, {"Retry-After": "7"}
        capture.error = {"code": "rate_limited", "message": "slow down"}
        with pytest.raises(RateLimitedError) as limited:
            c.get_batch("batch_1")
        assert limited.value.retry_after == 7.0 and limited.value.code == "rate_limited"

        capture.headers = {"Retry-After": formatdate(time.time() + 30, usegmt=True)}
        with pytest.raises(RateLimitedError) as dated:
            c.get_batch("batch_1")
        assert dated.value.retry_after is not None and 20 < dated.value.retry_after <= 31

        capture.headers = {}
        with pytest.raises(RateLimitedError) as bare:
            c.get_batch("batch_1")
        assert bare.value.retry_after is None


def test_the_cli_sends_the_api_key_and_prints_the_refusal(capture: Capture) -> None:
    res = cli("status", "batch_1", "--url", capture.url, "--api-key", "sk-cli")
    assert res.returncode == 2 and res.stderr == "error: invalid_api_key: unknown API key\n"
    res = cli("list", "--url", capture.url, env={"BATCHYARD_API_KEY": "sk-env"})
    assert res.returncode == 2
    assert capture.authorizations() == ["Bearer sk-cli", "Bearer sk-env"]

    capture.status, capture.headers = 429, {"Retry-After": "3"}
    capture.error = {"code": "rate_limited", "message": "slow down"}
    res = cli("status", "batch_1", "--url", capture.url)
    assert res.returncode == 1 and res.stderr == "error: rate_limited: slow down (retry after 3s)\n"
