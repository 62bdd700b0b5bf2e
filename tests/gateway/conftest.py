"""Fixtures: a mock OpenAI-compatible upstream in this process, and real ``batchyard serve --upstream``
subprocesses driven with the official ``openai`` package (helpers in ``_gateway_support``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))  # _serve_support, shared with the server's

from _serve_support import Server

from batchyard.gateway.mock_upstream import Behaviour, MockUpstream


@pytest.fixture
def upstream() -> Iterator[MockUpstream]:
    up = MockUpstream(Behaviour()).start()
    yield up
    up.stop()


@pytest.fixture
def start_gateway(tmp_path: Path, upstream: MockUpstream) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*extra: str, store: Path | None = None) -> Server:
        s = Server(store or tmp_path / "store.db", tmp_path / f"server{len(started)}.log", "--upstream", upstream.url,
                   *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
