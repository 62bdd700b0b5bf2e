"""Running one item: results, errors, permanence, retry decisions."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import PurePosixPath
from typing import Any

import pytest
from pydantic import BaseModel

from batchyard.core.errors import PermanentError
from batchyard.core.execute import Attempt, ainvoke, encode_result, invoke, timed_out, to_outcome
from batchyard.core.processor import Context, Item, Processor, processor
from batchyard.core.retry import RetryPolicy
from batchyard.core.store import FAIL, OK, RETRY, BatchRuntime, Claimed, Outcome

RT = BatchRuntime(pk=7, batch_id="batch_x", processor="p", params={"shared": 1}, max_attempts=3, status="running",
                  cost_per_item=0.0)


def claimed(attempts: int = 1, payload: Any = None, key: str | None = None, seq: int = 4) -> Claimed:
    return Claimed(rowid=104, seq=seq, key=key, payload={"n": 2} if payload is None else payload,
                   attempts=attempts)


def obj(value: Any) -> Any:
    """Results and errors as objects, whether a version of the code keeps them as JSON text or not."""
    return json.loads(value) if isinstance(value, str) else value


def make(fn: Any, **kw: Any) -> Processor:
    return processor("unit-exec-" + uuid.uuid4().hex[:8], **kw)(fn)


# -- encode_result ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ({"a": 1}, {"a": 1}),
    (None, {}),
    (5, {"value": 5}),
    ("text", {"value": "text"}),
    ([1, 2], {"value": [1, 2]}),
    ({"nested": {"x": [1, "ü"]}}, {"nested": {"x": [1, "ü"]}}),
])
def test_encode_result_wraps_non_dicts(value: Any, expected: Any) -> None:
    assert json.loads(encode_result(value)) == expected


def test_encode_result_knows_common_types() -> None:
    class M(BaseModel):
        x: int

    @dataclasses.dataclass
    class D:
        y: str

    u = uuid.UUID(int=1)
    out = json.loads(encode_result({"m": M(x=1), "d": D("z"), "t": datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
                                    "day": date(2025, 1, 2), "p": PurePosixPath("/a/b"), "u": u,
                                    "s": {1}, "tu": (1, 2)}))
    assert out == {"m": {"x": 1}, "d": {"y": "z"}, "t": "2025-01-02T03:04:00+00:00", "day": "2025-01-02",
                   "p": "/a/b", "u": str(u), "s": [1], "tu": [1, 2]}
    assert json.loads(encode_result({"k": "ü"})) == {"k": "ü"}
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        encode_result({"o": object()})


# -- invoke -----------------------------------------------------------------------------------


def test_invoke_success_sees_item_and_context() -> None:
    seen: dict[str, Any] = {}

    def fn(item: Item, ctx: Context) -> dict[str, Any]:
        seen.update(id=item.id, seq=item.seq, payload=item.payload, attempt=item.attempt, params=item.params,
                    key=ctx.idempotency_key, ctx_attempt=ctx.attempt)
        return {"double": item.payload["n"] * 2}

    a = invoke(make(fn), RT, claimed(attempts=2))
    assert a.ok and not a.permanent and a.error is None
    assert obj(a.result) == {"double": 4}
    assert a.started <= a.finished
    assert seen == {"id": "4", "seq": 4, "payload": {"n": 2}, "attempt": 2, "params": {"shared": 1, "n": 2},
                    "key": "batch_x:4", "ctx_attempt": 2}
    a = invoke(make(lambda item, ctx: item.id), RT, claimed(key="upc-1"))
    assert obj(a.result) == {"value": "upc-1"}


def test_invoke_permanent_error() -> None:
    def fn(item: Item, ctx: Context) -> None:
        raise PermanentError("bad row")

    a = invoke(make(fn), RT, claimed())
    assert not a.ok and a.permanent
    assert a.error is not None
    assert a.error["type"] == "PermanentError" and a.error["message"] == "bad row"
    assert a.error["attempt"] == 1 and "Traceback" in a.error["traceback"] and "bad row" in a.error["traceback"]


def test_invoke_ordinary_error_is_retryable() -> None:
    def fn(item: Item, ctx: Context) -> None:
        raise ConnectionError()

    a = invoke(make(fn), RT, claimed())
    assert not a.ok and not a.permanent
    assert a.error is not None and a.error["type"] == "ConnectionError"
    assert a.error["message"] == "ConnectionError"  # an empty message names the type


def test_invalid_params_are_permanent() -> None:
    class Params(BaseModel):
        n: int

    a = invoke(make(lambda item, ctx: item.params.n, params=Params), RT, claimed(payload={"n": "many"}))
    assert not a.ok and a.permanent and a.error is not None and a.error["type"] == "ValidationError"


def test_failure_keeps_a_partial_result() -> None:
    class WithResult(Exception):
        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.result = {"stdout": "half"}

    def fn(item: Item, ctx: Context) -> None:
        raise WithResult("exit 1")

    a = invoke(make(fn), RT, claimed())
    assert not a.ok and obj(a.result) == {"stdout": "half"}


def test_cost() -> None:
    def reporting(item: Item, ctx: Context) -> None:
        ctx.report_cost(0.2)
        ctx.report_cost(0.3)

    assert invoke(make(reporting, cost_per_item=9), RT, claimed()).cost == pytest.approx(0.5)
    assert invoke(make(lambda item, ctx: None, cost_per_item=0.01), RT, claimed()).cost == 0.01
    priced = dataclasses.replace(RT, cost_per_item=0.02)
    assert invoke(make(lambda item, ctx: None, cost_per_item=0.01), priced, claimed()).cost == 0.02
    assert invoke(make(lambda item, ctx: None), RT, claimed()).cost is None

    def failing(item: Item, ctx: Context) -> None:
        ctx.report_cost(0.1)
        raise RuntimeError("after spending")

    assert invoke(make(failing), RT, claimed()).cost == 0.1  # money spent on a failed attempt is counted


def test_attempt_pickles() -> None:
    import pickle

    a = Attempt(True, {"x": 1}, None, False, 0.5, 1.0, 2.0)
    b = pickle.loads(pickle.dumps(a))
    assert (b.ok, b.result, b.error, b.permanent, b.cost, b.started, b.finished) == \
        (True, {"x": 1}, None, False, 0.5, 1.0, 2.0)


# -- ainvoke ----------------------------------------------------------------------------------


def test_ainvoke_success_and_timeout() -> None:
    async def quick(item: Item, ctx: Context) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"n": item.payload["n"]}

    async def slow(item: Item, ctx: Context) -> None:
        await asyncio.sleep(5)

    assert obj(asyncio.run(ainvoke(make(quick), RT, claimed())).result) == {"n": 2}
    t = time.perf_counter()
    a = asyncio.run(ainvoke(make(slow, timeout=0.05), RT, claimed()))
    assert time.perf_counter() - t < 2
    assert not a.ok and not a.permanent and a.error is not None
    assert a.error["type"] == "TimeoutError" and "0.05" in a.error["message"]


def test_ainvoke_permanent_error() -> None:
    async def fn(item: Item, ctx: Context) -> None:
        raise PermanentError("nope")

    a = asyncio.run(ainvoke(make(fn), RT, claimed()))
    assert not a.ok and a.permanent and a.error is not None and a.error["message"] == "nope"


def test_ainvoke_keeps_the_processors_own_timeout_error() -> None:
    async def fn(item: Item, ctx: Context) -> None:
        raise TimeoutError("upstream slow")

    a = asyncio.run(ainvoke(make(fn), RT, claimed()))
    assert a.error is not None and a.error["message"] == "upstream slow"


def test_timed_out() -> None:
    p = make(lambda item, ctx: None, timeout=0.2)
    a = timed_out(p, claimed(attempts=2), time.time() - 0.3)
    assert not a.ok and not a.permanent and a.error is not None
    assert a.error["type"] == "TimeoutError" and "0.2" in a.error["message"] and a.error["attempt"] == 2


# -- to_outcome -------------------------------------------------------------------------------

POLICY = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=10.0)


def failed(permanent: bool = False) -> Attempt:
    now = time.time()
    return Attempt(False, None, {"type": "E", "message": "m", "attempt": 1}, permanent, None, now - 0.1, now)


def test_to_outcome_ok() -> None:
    now = time.time()
    o = Outcome._make(to_outcome(Attempt(True, {"r": 1}, None, False, 0.5, now - 1, now), claimed(), RT, POLICY))
    assert (o.batch_pk, o.rowid, o.kind, o.error, o.cost, o.not_before) == (7, 104, OK, None, 0.5, None)
    assert obj(o.result) == {"r": 1}
    assert o.finished - o.started == pytest.approx(1_000_000, abs=2)  # microseconds since the epoch
    assert abs(o.finished - now * 1e6) < 2


@pytest.mark.parametrize("attempts", [1, 2])
def test_to_outcome_retries_while_attempts_remain(attempts: int) -> None:
    a = failed()
    o = Outcome._make(to_outcome(a, claimed(attempts=attempts), RT, POLICY))
    assert o.kind == RETRY and o.result is None
    assert obj(o.error)["message"] == "m"
    ceiling = min(POLICY.max_delay, POLICY.base_delay * POLICY.factor ** (attempts - 1))
    assert o.not_before is not None
    at = o.not_before / 1e6  # microseconds since the epoch
    assert a.finished + 0.1 * ceiling - 1e-5 <= at <= a.finished + ceiling + 1e-5


@pytest.mark.parametrize("attempts", [3, 4])
def test_to_outcome_gives_up_after_the_last_attempt(attempts: int) -> None:
    o = Outcome._make(to_outcome(failed(), claimed(attempts=attempts), RT, POLICY))
    assert o.kind == FAIL and o.not_before is None and obj(o.error)["type"] == "E"


def test_to_outcome_permanent_fails_at_once() -> None:
    o = Outcome._make(to_outcome(failed(permanent=True), claimed(attempts=1), RT, POLICY))
    assert o.kind == FAIL


def test_to_outcome_fail_keeps_partial_result() -> None:
    now = time.time()
    a = Attempt(False, {"stdout": "x"}, {"type": "E", "message": "m"}, True, None, now, now)
    o = Outcome._make(to_outcome(a, claimed(), RT, POLICY))
    assert o.kind == FAIL and obj(o.result) == {"stdout": "x"}


def test_invoke_then_outcome_end_to_end() -> None:
    calls = []

    def flaky(item: Item, ctx: Context) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt}")
        return "ok"

    p = make(flaky, retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    kinds = [Outcome._make(to_outcome(invoke(p, RT, claimed(attempts=n)), claimed(attempts=n), RT, p.retry)).kind
             for n in (1, 2, 3)]
    assert kinds == [RETRY, RETRY, OK] and calls == [1, 2, 3]
