"""The SSRF guard and the data-root confinement, in process (``tests/server/test_guard.py`` drives a server).

Name resolution is faked with a monkeypatched ``socket.getaddrinfo`` where a test is about how addresses
are classified; the redirect and rebinding tests read over real loopback HTTP servers.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, DirectoryPath, Field, FilePath, ValidationError

from batchyard.io import inputs
from batchyard.server import netguard
from batchyard.server.errors import InvalidPath, InvalidUrl, PathNotAllowed, UrlNotAllowed
from batchyard.server.netguard import check_url, confine_path, confining_model, path_fields, refusal

# -- addresses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd12::1", "private"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"), ("100.64.0.1", "shared, carrier-grade NAT"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("240.0.0.1", "private"), ("192.0.2.1", "private"),  # reserved and documentation ranges: never public
    ("::ffff:127.0.0.1", "loopback, IPv4 127.0.0.1 inside IPv6"),
    ("::ffff:169.254.169.254", "cloud metadata, IPv4 169.254.169.254 inside IPv6"),
    ("2002:7f00:1::", "loopback, IPv4 127.0.0.1 inside IPv6"),  # 6to4
    ("64:ff9b::a00:1", "private, IPv4 10.0.0.1 inside IPv6"),  # NAT64
])
def test_refused_addresses(address: str, why: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808"])
def test_public_addresses(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


# -- check_url -----------------------------------------------------------------------------------


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host name -> the addresses socket.getaddrinfo gives for it (anything else does not resolve)."""
    table: dict[str, list[str]] = {}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for a in table[host]:
            v6 = ":" in a
            out.append((socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                        (a, port, 0, 0) if v6 else (a, port)))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def test_a_public_host_passes(dns: dict[str, list[str]]) -> None:
    dns["example.com"] = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    check_url("https://example.com/data.csv", allow_private=False)
    check_url("http://example.com:8080/data.csv", allow_private=False)


def test_any_private_address_of_a_host_refuses_it(dns: dict[str, list[str]]) -> None:
    dns["mixed.example"] = ["93.184.216.34", "10.0.0.7"]
    with pytest.raises(UrlNotAllowed) as exc:
        check_url("http://mixed.example/x", allow_private=False)
    msg = str(exc.value)
    assert "mixed.example" in msg and "10.0.0.7 (private)" in msg and "--allow-private-network" in msg
    assert (exc.value.host, exc.value.address) == ("mixed.example", "10.0.0.7")
    check_url("http://mixed.example/x", allow_private=True)


def test_metadata_by_name(dns: dict[str, list[str]]) -> None:
    dns["metadata.google.internal"] = ["169.254.169.254"]
    with pytest.raises(UrlNotAllowed, match=r"metadata.google.internal resolves to 169.254.169.254 \(cloud metadata"):
        check_url("http://metadata.google.internal/computeMetadata/v1/", allow_private=False)


def test_an_unresolvable_host_is_refused_with_or_without_the_flag(dns: dict[str, list[str]]) -> None:
    for allow in (False, True):
        with pytest.raises(UrlNotAllowed, match=r"cannot resolve host 'nowhere.invalid' \(Name or service"):
            check_url("http://nowhere.invalid/x", allow_private=allow)


@pytest.mark.parametrize(("url", "match"), [
    ("ftp://example.com/x", "only http and https URLs are fetched, not ftp://"),
    ("file:///etc/passwd", "only http and https"),
    ("example.com/x", "a URL without a scheme"),
    ("http:///x", "the URL has no host"),
    ("http://example.com:99999/", "not a valid URL"),
    ("http://[::1/", "not a valid URL"),
])
def test_malformed_and_other_urls(dns: dict[str, list[str]], url: str, match: str) -> None:
    with pytest.raises(InvalidUrl, match=match):  # malformed: 422, where a refused address is 403
        check_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["http://999.1.1.1/", "http://1.2.3.4.5/", "http://4294967296/", "http://08.0.0.1/"])
def test_a_host_written_as_an_ip_that_is_no_ip_is_malformed(url: str) -> None:
    with pytest.raises(InvalidUrl, match="is written as an IPv4 address but is not one"):
        check_url(url, allow_private=True)


def test_literal_and_odd_spellings_are_judged_by_their_address() -> None:
    """No fake DNS: the C resolver parses the literals (as a fetch would)."""
    for url in ("http://127.1/", "http://2130706433/", "http://0x7f.0.0.1/", "http://[::ffff:7f00:1]/",
                "http://user@127.0.0.1:80/", "http://[0:0:0:0:0:0:0:1]/", "http://0177.0.0.1/",
                "http://017700000001/", "http://0x7f000001/"):
        with pytest.raises(UrlNotAllowed, match="loopback") as exc:
            check_url(url, allow_private=False)
        assert not isinstance(exc.value, InvalidUrl)  # well-formed, refused: 403
    with pytest.raises(UrlNotAllowed, match=r"10.0.0.1 \(private"):
        check_url("http://012.0.0.1/", allow_private=False)  # octal 012 is 10, not 12


# -- reading http(s) under the guard: redirects and DNS rebinding ------------------------------------


class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(f"{self.server.server_address[0]}{self.path}")
        if self.path.startswith("/to/"):  # /to/HOST:PORT/PATH redirects there
            self.send_response(302)
            self.send_header("Location", "http://" + self.path.removeprefix("/to/"))
            self.end_headers()
            return
        body = b"one\ntwo\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[Callable[[str], int]]:
    """Start HTTP servers on given loopback addresses; returns their ports. Requests land in ``_Handler.seen``."""
    started: list[ThreadingHTTPServer] = []
    _Handler.seen = []

    def start(host: str) -> int:
        srv = ThreadingHTTPServer((host, 0), _Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return int(srv.server_address[1])

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def only_127_0_0_2_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline there is no public origin: pretend 127.0.0.2 is one, and every other address is private."""
    monkeypatch.setattr(netguard, "refusal", lambda addr: None if str(addr) == "127.0.0.2" else "private")


def read(url: str) -> list[Any]:
    options = {**(netguard.http_storage_options(allow_private=False) or {}), "skip_instance_cache": True}
    return list(inputs.open_input(url, "text", storage_options=options).items())


def test_guarded_reads_work(web: Callable[[str], int], only_127_0_0_2_public: None) -> None:
    public = web("127.0.0.2")
    assert read(f"http://127.0.0.2:{public}/x.txt") == [(None, "one"), (None, "two")]


@pytest.mark.parametrize("target", ["127.0.0.1:{port}/x.txt", "localhost:{port}/x.txt"])
def test_a_redirect_to_a_refused_address_is_not_followed(web: Callable[[str], int], only_127_0_0_2_public: None,
                                                         target: str) -> None:
    public, private = web("127.0.0.2"), web("127.0.0.1")
    check_url(f"http://127.0.0.2:{public}/", allow_private=False)  # the submitted URL passes the check
    with pytest.raises(UrlNotAllowed, match=r"127.0.0.1 \(private\).*--allow-private-network"):
        read(f"http://127.0.0.2:{public}/to/{target.format(port=private)}")
    assert not any(s.startswith("127.0.0.1") for s in _Handler.seen), _Handler.seen  # never reached


def test_a_dns_answer_that_changes_after_the_check_is_refused(web: Callable[[str], int], only_127_0_0_2_public: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: public when checked, loopback when fetched."""
    port = web("127.0.0.1")
    real = socket.getaddrinfo
    answers = iter(["127.0.0.2"])

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        return real(next(answers, "127.0.0.1") if host == "rebind.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    check_url(f"http://rebind.test:{port}/x.txt", allow_private=False)
    with pytest.raises(UrlNotAllowed, match=r"rebind.test resolves to 127.0.0.1"):
        read(f"http://rebind.test:{port}/x.txt")
    assert _Handler.seen == []


# -- data roots ----------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "sub" / "a.txt").write_text("a")
    (tmp_path / "outside" / "b.txt").write_text("b")
    (tmp_path / "root" / "out.txt").symlink_to(tmp_path / "outside" / "b.txt")
    (tmp_path / "root" / "outdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    (tmp_path / "link-to-root").symlink_to(tmp_path / "root", target_is_directory=True)
    return tmp_path


def test_paths_inside_a_root(tree: Path) -> None:
    root = tree / "root"
    assert confine_path(str(root / "sub" / "a.txt"), [root]) == root / "sub" / "a.txt"
    assert confine_path("sub/a.txt", [root]) == root / "sub" / "a.txt"  # relative to the first root
    assert confine_path("sub/../sub/new.txt", [root]) == root / "sub" / "new.txt"  # need not exist
    assert confine_path(str(root), [root]) == root
    assert confine_path(str(tree / "outside" / "b.txt"), [root, tree / "outside"]) == tree / "outside" / "b.txt"
    # a root given through a symlink is the directory it points to
    assert confine_path(str(root / "sub" / "a.txt"), [tree / "link-to-root"]) == root / "sub" / "a.txt"


@pytest.mark.parametrize("path", ["../outside/b.txt", "{t}/root/../outside/b.txt", "{t}/outside/b.txt",
                                  "{t}/root/out.txt", "{t}/root/outdir/b.txt", "/etc/passwd", "{t}/root-sibling",
                                  "sub/../../outside"])
def test_paths_escaping_the_roots(tree: Path, path: str) -> None:
    path = path.format(t=tree)
    with pytest.raises(PathNotAllowed) as exc:
        confine_path(path, [tree / "root"])
    assert repr(path) in str(exc.value) and str(tree / "root") in str(exc.value)
    assert "b.txt" not in str(exc.value).replace(path, "")  # where a symlink points is not told


def test_without_roots_nothing_is_allowed(tree: Path) -> None:
    with pytest.raises(PathNotAllowed, match="this server reads no local files; start it with --data-root DIR"):
        confine_path(str(tree / "root" / "sub" / "a.txt"), [])


def test_a_nul_byte_is_malformed_not_refused(tree: Path) -> None:
    for roots in ([tree / "root"], []):  # 422 whatever the roots: no system has such a path
        with pytest.raises(InvalidPath, match="contains a NUL byte: it is not a path"):
            confine_path(str(tree / "root" / "a\0b"), roots)


# -- path fields of a params model ---------------------------------------------------------------


class Inner(BaseModel):
    location: Path
    label: str = ""


class Params(BaseModel):
    master: Path
    dub: FilePath | None = None
    folder: DirectoryPath | None = None
    many: list[Path] = []
    pair: tuple[str, Path] | None = None
    named: dict[str, Path] = {}
    nested: list[Inner] = []
    aliased: Path | None = Field(None, alias="file")
    text: str = ""
    count: int = 0
    tags: list[str] = []


def test_path_fields() -> None:
    assert path_fields(Params) == ["master", "dub", "folder", "many", "pair", "named", "nested", "aliased"]
    assert path_fields(Inner) == ["location"]
    assert path_fields(None) == []


def test_the_confining_model_checks_every_path_before_the_fields_own_checks(tree: Path) -> None:
    root = tree / "root"
    model = confining_model(Params, netguard.resolve_roots([root]))
    inside = str(root / "sub" / "a.txt")
    ok = model.model_validate({"master": inside, "dub": inside, "many": [inside], "pair": ["x", inside],
                               "named": {"k": inside}, "nested": [{"location": inside}], "file": inside,
                               "text": "/etc/passwd"})  # a str field is not a path
    assert isinstance(ok, Params) and ok.master == Path(inside)
    outside = str(tree / "outside" / "b.txt")
    for field, value in [("master", "/etc/passwd"), ("master", "relative.txt"), ("dub", "/no/such/file"),
                         ("many", [inside, outside]), ("pair", ["x", outside]), ("named", {"k": outside}),
                         ("nested", [{"location": outside}]), ("file", outside)]:
        data = {"master": inside, field: value}
        with pytest.raises(ValidationError) as exc:
            model.model_validate(data)
        (err,) = exc.value.errors()
        assert err["type"] == "path_not_allowed" and err["msg"].startswith(netguard.PATH_REFUSED), err
        assert err["loc"][0] == field
        assert "does not point to a file" not in str(exc.value)  # no probing outside the roots
    assert Params.model_validate({"master": "/anywhere"}).master == Path("/anywhere")  # the original is untouched
