"""The client covers the real server's API exactly: every OpenAPI operation and every WebSocket route has a
client method, and the client names nothing the server lacks.

The client declares what it covers (``OPERATIONS``: (method, path) -> method name; ``WEBSOCKETS``: path ->
method name). A route added to the server without a client method, or a client entry for a route that is
gone, fails here; whoever adds a route adds its method and its line to the table.
"""

from __future__ import annotations

import inspect
import re

import httpx
import pytest
from _serve_support import API, Server
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from batchyard import AsyncClient, Client
from batchyard.client._calls import OPERATIONS, WEBSOCKETS

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def spec(server: Server) -> dict:
    r = httpx.get(server.url + "/openapi.json", timeout=10)
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def server_operations(spec: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path.removeprefix(API)) for path, item in spec["paths"].items()
            for method in item if method in HTTP_METHODS}


def test_every_operation_has_a_client_method_and_no_more(spec: dict) -> None:
    ops = server_operations(spec)
    assert all(path.startswith(API) for path in spec["paths"])
    assert ops - set(OPERATIONS) == set(), "server operations without a client method (add them to OPERATIONS)"
    assert set(OPERATIONS) - ops == set(), "client operations the server does not have"


def test_every_websocket_has_a_client_method_and_no_more(spec: dict) -> None:
    sockets = {path.removeprefix(API) for path in spec.get("x-websockets", {})}
    assert sockets, "the server lists its WebSocket routes under x-websockets"
    assert sockets - set(WEBSOCKETS) == set(), "WebSocket routes without a client method (add them to WEBSOCKETS)"
    assert set(WEBSOCKETS) - sockets == set(), "client WebSocket paths the server does not have"


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_the_named_methods_exist_and_take_the_path_parameters(cls: type) -> None:
    for (method, path), name in [*OPERATIONS.items(), *(((("WS", p), n) for p, n in WEBSOCKETS.items()))]:
        fn = getattr(cls, name, None)
        assert callable(fn), f"{cls.__name__}.{name} for {method} {path}"
        params = inspect.signature(fn).parameters
        for param in re.findall(r"{(\w+)}", path):
            assert param in params, f"{cls.__name__}.{name} lacks {param!r} for {method} {path}"


def test_the_client_websocket_urls_reach_the_server(server: Server) -> None:
    """Each WebSocket path the client builds is a route of the real server: a route answers after the
    handshake (here: 4404 for a batch that does not exist, or events); an unknown path fails the handshake."""
    with Client(server.url) as c:
        urls = {path: c.ws_url("batch_none") if "{batch_id}" in path else c.ws_url() for path in WEBSOCKETS}
    for path, url in urls.items():
        assert url.startswith("ws://") and url.endswith(API + path.replace("{batch_id}", "batch_none")), url
        with connect(url, open_timeout=5) as ws:
            try:
                ws.recv(timeout=1)
            except TimeoutError:
                pass  # a stream with nothing to say yet: the route is there
            except ConnectionClosed:
                assert ws.close_code == 4404, (path, ws.close_code)
    with pytest.raises(InvalidStatus), connect(url.replace("/ws", "/not-a-socket"), open_timeout=5):
        pass
