"""SSRF and data-root refusals against a real server: what a client may make the server fetch or read.

The guarded server runs WITHOUT --allow-private-network, with one data root. Refusals are 403 with a
code saying what was refused, and create nothing.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from _serve_support import API, BIN, Server

from batchyard import Client


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/`` (the data root) with files and escaping symlinks, beside ``outside/``."""
    d = tmp_path_factory.mktemp("guard")
    (d / "root" / "media").mkdir(parents=True)
    (d / "outside").mkdir()
    (d / "root" / "codes.txt").write_text("1\n2\n3\n")
    (d / "root" / "media" / "a.wav").write_bytes(b"x" * 10)
    (d / "outside" / "secret.txt").write_text("s3cret\n")
    (d / "root" / "escape.txt").symlink_to(d / "outside" / "secret.txt")
    (d / "root" / "leaky").mkdir()
    (d / "root" / "leaky" / "ok.txt").write_text("fine\n")
    (d / "root" / "leaky" / "out.txt").symlink_to(d / "outside" / "secret.txt")
    return d


@pytest.fixture(scope="module")
def guarded(files: Path) -> Iterator[Server]:
    s = Server(files / "store.db", files / "server.log", "--workers", "2", "--data-root", str(files / "root"))
    yield s
    s.stop()


@pytest.fixture
def http(guarded: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=guarded.url + API, timeout=10) as h:
        yield h


class _Files(BaseHTTPRequestHandler):
    """Serves ``/x.txt``; ``/to/HOST:PORT/PATH`` redirects to ``http://HOST:PORT/PATH``. Records requests."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", "http://" + self.path.removeprefix("/to/"))
            self.end_headers()
            return
        body = b"alpha\nbeta\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback: its base URL, and the paths requested from it."""
    requests: ClassVar[list[str]] = []
    handler = type("Handler", (_Files,), {"requests": requests})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", requests
    srv.shutdown()
    srv.server_close()


def error_of(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    return err  # type: ignore[no-any-return]


def batch_count(http: httpx.Client) -> int:
    return len(http.get("/batches", params={"limit": 1000}).json()["batches"])


# -- URLs ----------------------------------------------------------------------------------------


def test_a_loopback_url_is_refused_without_the_flag(http: httpx.Client, origin: tuple[str, list[str]]) -> None:
    base, requests = origin
    before = batch_count(http)
    for endpoint in ("/batches", "/batches/validate"):
        err = error_of(http.post(endpoint, json={"processor": "slow", "input_uri": f"{base}/x.txt"}), 403,
                       "url_not_allowed")
        assert "127.0.0.1 (loopback)" in err["message"] and "--allow-private-network" in err["message"]
        assert err["details"]["address"] == "127.0.0.1"
    assert requests == [] and batch_count(http) == before


@pytest.mark.parametrize(("url", "address", "kind"), [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "cloud metadata"),
    ("http://[::1]/x.txt", "::1", "loopback"),
    ("http://localhost/x.txt", "127.0.0.1", "loopback"),
    ("http://10.0.0.1/x.txt", "10.0.0.1", "private"),
    ("https://[::ffff:192.168.1.1]/x.txt", "::ffff:c0a8:101", "private"),
    ("http://2130706433/x.txt", "127.0.0.1", "loopback"),  # 127.0.0.1 written as one integer
])
def test_private_and_metadata_urls_are_refused(http: httpx.Client, url: str, address: str, kind: str) -> None:
    err = error_of(http.post("/batches", json={"processor": "slow", "input_uri": url}), 403, "url_not_allowed")
    assert err["details"]["address"] == address and f"({kind}" in err["message"], err
    assert "--allow-private-network" in err["message"]


def test_an_unresolvable_host_is_refused_clearly(http: httpx.Client) -> None:
    err = error_of(http.post("/batches", json={"processor": "slow", "input_uri": "http://no-such-host.invalid/x.txt"}),
                   403, "url_not_allowed")
    assert "cannot resolve host 'no-such-host.invalid'" in err["message"]
    assert err["details"]["host"] == "no-such-host.invalid"


def test_a_loopback_url_is_read_with_the_flag(start_server: Callable[..., Server],
                                              origin: tuple[str, list[str]]) -> None:
    base, requests = origin
    s = start_server("--workers", "1", "--allow-private-network")
    with Client(s.url, timeout=10) as c:
        b = c.create_batch("slow", input_uri=f"{base}/x.txt")
        assert b.items_total == 2
        assert c.wait(b.batch_id, timeout=10).items_succeeded == 2
    assert "/x.txt" in requests


@pytest.mark.parametrize("uri", ["memory://x.txt", "ftp://example.com/x.txt", "sftp://example.com/x.txt",
                                 "github://org:repo@main/x.txt", "zip://x.txt::file:///etc/passwd",
                                 "simplecache::http://example.com/x.txt", "data:,1%0A2"])
def test_other_schemes_are_refused(http: httpx.Client, uri: str) -> None:
    err = error_of(http.post("/batches", json={"processor": "slow", "input_uri": uri}), 403, "input_uri_not_allowed")
    assert "gs://" in err["message"] and "--data-root" in err["message"], err  # says what is accepted


# -- local files ---------------------------------------------------------------------------------


def test_local_files_are_refused_without_data_roots(start_server: Callable[..., Server], files: Path) -> None:
    s = start_server("--workers", "0")
    for uri in (str(files / "root" / "codes.txt"), f"file://{files}/root/codes.txt", "codes.txt"):
        r = httpx.post(f"{s.url}{API}/batches", json={"processor": "slow", "input_uri": uri})
        err = error_of(r, 403, "path_not_allowed")
        assert "reads no local files" in err["message"] and "--data-root DIR" in err["message"]
        assert err["details"][0]["column"] == "input_uri"


def test_files_inside_the_data_root_are_read(http: httpx.Client, files: Path) -> None:
    for uri in (str(files / "root" / "codes.txt"), f"file://{files}/root/codes.txt", "codes.txt",
                str(files / "root" / "media" / ".." / "codes.txt")):
        r = http.post("/batches", json={"processor": "slow", "input_uri": uri, "start": False})
        assert r.status_code == 201, r.text
        assert r.json()["items_total"] == 3 and r.json()["source"] == uri


@pytest.mark.parametrize("uri", ["../outside/secret.txt", "{d}/root/../outside/secret.txt", "{d}/outside/secret.txt",
                                 "{d}/root/escape.txt", "file://{d}/root/escape.txt", "/etc/passwd",
                                 "{d}/root/media/../../outside"])
def test_escapes_from_the_data_root_are_refused(http: httpx.Client, files: Path, uri: str) -> None:
    uri = uri.format(d=files)
    before = batch_count(http)
    err = error_of(http.post("/batches", json={"processor": "slow", "input_uri": uri}), 403, "path_not_allowed")
    assert "outside this server's data roots" in err["message"] and str(files / "root") in err["message"]
    assert "secret" not in json.dumps(err).replace(uri, "")  # the symlink's target is not disclosed
    assert batch_count(http) == before


def test_a_directory_with_a_symlink_out_of_the_root_is_refused(http: httpx.Client, files: Path) -> None:
    err = error_of(http.post("/batches", json={"processor": "slow", "input_uri": str(files / "root" / "leaky")}),
                   403, "path_not_allowed")
    assert err["details"][0]["column"] == "path" and "out.txt" in err["details"][0]["reason"]


def test_data_roots_from_the_environment(start_server: Callable[..., Server], files: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("1\n")
    monkeypatch.setenv("BATCHYARD_DATA_ROOTS", f"{files / 'root'}{os.pathsep}{tmp_path / 'other'}")
    s = start_server("--workers", "0")
    with Client(s.url) as c:
        assert c.create_batch("slow", input_uri=str(tmp_path / "other" / "x.txt"), start=False).items_total == 1
        assert c.create_batch("slow", input_uri=str(files / "root" / "codes.txt"), start=False).items_total == 3


def test_a_data_root_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    r = subprocess.run([str(BIN), "serve", "--port", "0", "--store", str(tmp_path / "s.db"),
                        "--data-root", str(tmp_path / "nope")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "--data-root" in r.stderr and "does not exist" in r.stderr


# -- path columns (the "probe" processor's params model has Path fields) ----------------------------


def test_path_columns_outside_the_roots_are_refused_with_line_and_column(http: httpx.Client, files: Path) -> None:
    inside = str(files / "root" / "media" / "a.wav")
    before = batch_count(http)
    items = [{"media": inside}, {"media": "/etc/passwd"}, {"media": inside, "extras": [inside, str(files / "root" /
                                                                                                  "escape.txt")]}]
    err = error_of(http.post("/batches", json={"processor": "probe", "items": items}), 403, "path_not_allowed")
    found = {(p["column"], p["reason"].split(":")[0]) for p in err["details"]}
    assert found == {("media", "item 2"), ("extras", "item 3")}, err
    assert "/etc/passwd" in err["message"] and "outside this server's data roots" in err["message"]

    # an upload: CSV line numbers (the header is line 1)
    csv = f"media,sidecar\n{inside},\n{inside},/etc/hostname\n../outside/secret.txt,\n"
    r = http.post("/batches/upload", data={"processor": "probe"}, files={"file": ("media.csv", csv.encode())})
    err = error_of(r, 403, "path_not_allowed")
    assert {(p["line"], p["column"]) for p in err["details"]} == {(3, "sidecar"), (4, "media")}, err
    assert all(p["source"] == "media.csv" for p in err["details"])
    # "relative" is refused: the processor would open it relative to its own working directory
    assert "relative path" in next(p["reason"] for p in err["details"] if p["line"] == 4)

    # an input_uri (JSONL inside the root, naming a file outside it)
    (files / "root" / "media.jsonl").write_text(json.dumps({"media": inside}) + "\n\n"
                                                + json.dumps({"media": str(files / "outside" / "secret.txt")}) + "\n")
    err = error_of(http.post("/batches", json={"processor": "probe", "input_uri": str(files / "root" / "media.jsonl")}),
                   403, "path_not_allowed")
    assert [(p["line"], p["column"]) for p in err["details"]] == [(3, "media")]

    # the shared params too
    err = error_of(http.post("/batches", json={"processor": "probe", "items": [{"extras": []}],
                                               "params": {"media": "/etc/passwd"}}), 403, "path_not_allowed")
    assert err["details"][0]["column"] == "params.media"
    assert batch_count(http) == before


def test_a_missing_file_outside_the_roots_is_refused_not_reported_missing(http: httpx.Client) -> None:
    """FilePath checks that the file exists: the refusal must come first, or it would probe the disk."""
    for sidecar in ("/etc/hostname", "/no/such/file"):
        items = [{"media": "/x", "sidecar": sidecar}]
        r = http.post("/batches", json={"processor": "probe", "items": items})
        assert error_of(r, 403, "path_not_allowed")["details"][0]["column"] in ("media", "sidecar")
        assert "does not point to a file" not in r.text


def test_path_columns_inside_the_roots_are_accepted(guarded: Server, http: httpx.Client, files: Path) -> None:
    inside = str(files / "root" / "media" / "a.wav")
    with Client(guarded.url, timeout=10) as c:
        b = c.create_batch("probe", [{"media": inside, "extras": [str(files / "root" / "codes.txt")]}])
        assert c.wait(b.batch_id, timeout=10).items_succeeded == 1
        doc = http.get(f"/batches/{b.batch_id}/results").json()
        assert [r["result"] for r in doc["results"]] == [{"bytes": 10}], doc
        up = c.upload(io.BytesIO(f"media\n{inside}\n".encode()), "probe", filename="ok.csv")
        assert c.wait(up.batch_id, timeout=10).items_succeeded == 1
