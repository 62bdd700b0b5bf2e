"""Fixtures: a real server per test module (``server``), or per test (``start_server``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from _serve_support import API, Server

from batchyard import Client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with an embedded worker and a 1 MB body limit, shared by a module's tests.

    Its data root is pytest's base temporary directory, so tests may name their ``tmp_path`` files.
    """
    d = tmp_path_factory.mktemp("server")
    s = Server(d / "store.db", d / "server.log", "--workers", "4", "--max-upload-mb", "1",
               "--data-root", str(tmp_path_factory.getbasetemp()))
    yield s
    s.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*extra: str, store: Path | None = None) -> Server:
        s = Server(store or tmp_path / "store.db", tmp_path / f"server{len(started)}.log", *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + API, timeout=10) as h:
        yield h


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, timeout=10) as c:
        yield c
