"""Schemathesis against the real server's /openapi.json: no 5xx, no response that breaks its schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _serve_support import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Without --allow-input-uri: generated requests must not make the server read arbitrary files or URLs."""
    d = tmp_path_factory.mktemp("schema")
    s = Server(d / "store.db", d / "server.log", "--workers", "2")
    yield s
    s.stop()


def test_every_operation_conforms_to_its_schema(server: Server) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for op in operations:
        conforms(op.as_strategy())


def conforms(strategy: st.SearchStrategy) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        case = data.draw(strategy)
        case.call_and_validate(timeout=10)

    check()
