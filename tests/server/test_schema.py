"""Schemathesis against the real server's /openapi.json: no 5xx, no response that breaks its schema.

Path parameters are mostly real batch ids (final batches, so event streams end), so that the run
exercises the operations rather than their 404s; a run answered mostly 404 fails. The server has API
keys and the run sends one: a single 401 fails it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
from _serve_support import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchyard import Client

schemathesis = pytest.importorskip("schemathesis")
KEY = "fuzz-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Without --data-root or --allow-private-network: generated requests must not make the server read
    arbitrary files or fetch from its own network."""
    d = tmp_path_factory.mktemp("schema")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BATCHYARD_API_KEYS", f"fuzz:{KEY}")
        s = Server(d / "store.db", d / "server.log", "--workers", "2")
    yield s
    s.stop()


def test_every_operation_conforms_to_its_schema(server: Server) -> None:
    with Client(server.url, api_key=KEY) as c:
        ids = []
        for n in range(8):
            b = c.create_batch("slow", ["a", "b", "c"], tags=["fuzz"], description=f"batch {n}")
            ids.append(c.wait(b.batch_id, timeout=10).batch_id)
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    paths = {op.path for op in (r.ok() for r in schema.get_all_operations())}
    assert {"/api/v1/batches/upload", "/api/v1/batches/{batch_id}/webhooks"} <= paths
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    # the server-wide event stream never ends, so it has no response to validate (test_ws.py follows it)
    operations = [op for op in operations if (op.method.upper(), op.path) != ("GET", "/api/v1/events")]
    # what deletes batches runs last, so that the others meet real ones
    operations.sort(key=lambda op: op.method.upper() == "DELETE" or op.path.endswith("/cleanup"))
    statuses: Counter[int] = Counter()
    for op in operations:
        conforms(op.as_strategy(), ids, statuses)
    total = sum(statuses.values())
    assert statuses[401] == 0 and statuses[404] < total / 3, statuses
    assert sum(n for s, n in statuses.items() if 200 <= s < 300) > total / 4, statuses


def conforms(strategy: st.SearchStrategy, ids: list[str], statuses: Counter[int]) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        case = data.draw(strategy)
        params = case.path_parameters or {}
        if "batch_id" in params and data.draw(st.integers(0, 9)) > 0:
            params["batch_id"] = data.draw(st.sampled_from(ids))
            if "item_id" in params:
                params["item_id"] = data.draw(st.sampled_from(["1", "2", "3", "9"]))
        excluded = []
        if isinstance(case.body, dict) and "processor" in case.body:
            if data.draw(st.integers(0, 4)) > 0:
                case.body["processor"] = data.draw(st.sampled_from(["slow", "noop", "sync-analyze"]))
            # a real processor checks the items against its own parameter model, and a name is checked
            # against the server's registry, neither of which a static schema can describe: 422 is then a
            # right answer to a schema-valid request
            excluded = [schemathesis.checks.positive_data_acceptance]
        if isinstance(case.body, dict) and isinstance(case.body.get("params"), str) \
                and not _json_object(case.body["params"]):
            # the upload form's `params` is "a JSON object" in a string field, which OpenAPI can state
            # only in prose: a 422 naming `params` is the right answer to other strings
            excluded = [schemathesis.checks.positive_data_acceptance]
        response = case.call_and_validate(timeout=10, excluded_checks=excluded,
                                          headers={"Authorization": f"Bearer {KEY}"})
        statuses[response.status_code] += 1

    check()


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
