"""DNS rebinding at send time: ``netguard.PinnedTransport`` (webhook deliveries) connects only to the address
its own check judged, never to a second DNS answer.

The attack: a name answers with a public address when the guard checks it and with an internal one when
the HTTP client resolves it again to connect. Here two real HTTP servers listen on loopback, 127.0.0.1
(playing the public host: the test's ``refusal`` calls it public) and 127.0.0.2 (the internal service),
and a fake ``socket.getaddrinfo`` answers 127.0.0.1 the first time and 127.0.0.2 after that.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from batchyard.server import netguard
from batchyard.server.errors import UrlNotAllowed

PUBLIC, INTERNAL = "127.0.0.1", "127.0.0.2"


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.server.hits.append((self.headers["Host"], self.path))  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _serve(address: str, port: int) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer((address, port), _Recorder)
    srv.hits = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def servers() -> Iterator[tuple[ThreadingHTTPServer, ThreadingHTTPServer]]:
    """(public, internal) on the same port, as one name's two answers would be."""
    public = _serve(PUBLIC, 0)
    try:
        internal = _serve(INTERNAL, public.server_address[1])
    except OSError as exc:
        public.shutdown()
        pytest.skip(f"cannot listen on {INTERNAL}: {exc}")
    yield public, internal
    for srv in (public, internal):
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``rebind.example`` answers PUBLIC once, then INTERNAL; PUBLIC counts as public. Returns the lookups."""
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("rebind.example", b"rebind.example"):  # anyio asks with the IDNA bytes
            return real_getaddrinfo(host, port, *args, **kwargs)
        answer = PUBLIC if not lookups else INTERNAL
        lookups.append(answer)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, int(port or 80)))]

    real_refusal = netguard.refusal

    def refusal(addr: netguard.IPAddress) -> str | None:
        return None if addr == ipaddress.ip_address(PUBLIC) else real_refusal(addr)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(netguard, "refusal", refusal)
    return lookups


async def _post(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.post(url, content=b"{}")


def test_an_unpinned_client_follows_the_second_answer(servers: Any, rebinding: list[str]) -> None:
    """The attack, without the fix: check, then let httpx resolve again."""
    public, internal = servers
    url = f"http://rebind.example:{public.server_address[1]}/hook"
    netguard.check_url(url, allow_private=False)  # passes: the first answer is "public"

    async def send() -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await _post(client, url)).status_code == 204

    asyncio.run(send())
    assert internal.hits and not public.hits  # the internal service got the request


def test_the_pinned_transport_connects_only_to_the_checked_address(servers: Any, rebinding: list[str]) -> None:
    public, internal = servers
    port = public.server_address[1]
    url = f"http://rebind.example:{port}/hook"

    async def send() -> None:
        async with httpx.AsyncClient(transport=netguard.PinnedTransport(allow_private=False)) as client:
            assert (await _post(client, url)).status_code == 204  # resolved once: PUBLIC, judged and used
            with pytest.raises(UrlNotAllowed, match=r"rebind.example resolves to 127.0.0.2 \(loopback\)"):
                await _post(client, url)  # the next send resolves afresh, and the guard sees INTERNAL

    asyncio.run(send())
    assert public.hits == [(f"rebind.example:{port}", "/hook")]  # the Host header still names the host
    assert internal.hits == []
    assert rebinding == [PUBLIC, INTERNAL]  # one lookup per send: httpx itself resolved nothing


class _Capture(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(204)


def test_https_keeps_the_name_for_sni_and_the_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700:4700::1111", port, 0, 0))])
    inner = _Capture()

    async def send() -> None:
        async with httpx.AsyncClient(transport=netguard.PinnedTransport(allow_private=False, inner=inner)) as c:
            await c.post("https://hooks.example.com/in", content=b"{}")

    asyncio.run(send())
    (req,) = inner.requests
    assert str(req.url) == "https://[2606:4700:4700::1111]/in"
    assert req.headers["host"] == "hooks.example.com"
    assert req.extensions["sni_hostname"] == "hooks.example.com"


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://2130706433/",
                                 "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/"])
def test_refused_addresses_are_never_sent_to(url: str) -> None:
    inner = _Capture()

    async def send() -> None:
        async with httpx.AsyncClient(transport=netguard.PinnedTransport(allow_private=False, inner=inner)) as c:
            with pytest.raises(UrlNotAllowed):
                await c.post(url, content=b"{}")

    asyncio.run(send())
    assert inner.requests == []
