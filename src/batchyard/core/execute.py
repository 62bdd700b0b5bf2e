"""Running one item: build what the processor receives, call it, turn what happens into an Outcome.

The same functions serve thread lanes, async lanes and child processes, so an item behaves the same
whichever way its processor runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import time
import traceback
from datetime import date, datetime
from pathlib import PurePath
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ValidationError

from batchyard.core import defaults
from batchyard.core import processor as registry
from batchyard.core.errors import PermanentError, RetryAfter
from batchyard.core.processor import Context, Item, Processor
from batchyard.core.retry import GiveUp, RetryPolicy, decide
from batchyard.core.store import FAIL, OK, RETRY, BatchRuntime, Claimed, Outcome

log = logging.getLogger("batchyard.items")


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (PurePath, UUID)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"processor returned a {type(value).__name__}, which is not JSON-serialisable")


_encode = json.JSONEncoder(default=_default, separators=(",", ":")).encode


def shape_result(value: Any) -> dict[str, Any]:
    """Results are JSON objects; anything else is wrapped as ``{"value": ...}``."""
    if isinstance(value, dict):
        return value
    return {} if value is None else {"value": value}


def encode_result(value: Any) -> str:
    return _encode(shape_result(value))


def encode_outcomes(outcomes: list[Outcome]) -> str:
    """Encode a chunk of outcomes as one JSON array: one C call, not one per item.

    Raises TypeError or ValueError if a result cannot be encoded; ``sanitize_outcomes`` fixes that.
    """
    return _encode(outcomes)


def sanitize_outcomes(outcomes: list[Outcome]) -> list[Outcome]:
    """Turn every outcome whose result cannot be encoded into a permanent failure saying why."""
    fixed: list[Outcome] = []
    for o in outcomes:
        try:
            _encode(o)
            fixed.append(o)
        except (TypeError, ValueError) as exc:
            err = error_info(exc, 0)
            err["message"] = f"result is not JSON-serialisable: {exc}"
            err["type"] = "InvalidResult"
            fixed.append((o[0], o[1], FAIL, None, err, o[5], o[6], o[7], None))  # type: ignore[arg-type]
    return fixed


def error_info(exc: BaseException, attempt: int) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__,
            "traceback": tb[-defaults.TRACEBACK_TAIL_CHARS:], "attempt": attempt, "at": time.time()}


class Attempt:
    """What one call of a processor produced (picklable, for child processes)."""

    __slots__ = ("cost", "error", "finished", "ok", "permanent", "result", "started", "used")

    def __init__(self, ok: bool, result: dict[str, Any] | None, error: dict[str, Any] | None, permanent: bool,
                 cost: float | None, started: float, finished: float, used: float = 0.0) -> None:
        self.ok, self.result, self.error, self.permanent = ok, result, error, permanent
        self.cost, self.started, self.finished = cost, started, finished
        self.used = used  # of the batch's shared resource (ctx.use_resource)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Attempt, (self.ok, self.result, self.error, self.permanent, self.cost, self.started,
                          self.finished, self.used))


def make_item(proc: Processor, rt: BatchRuntime, c: Claimed) -> tuple[Item, Context]:
    _, seq, key, payload, attempts = c
    item_id = key if key is not None else str(seq)
    return (Item(item_id, seq, payload, attempts, rt.params, proc),
            Context(rt.batch_id, item_id, attempts, log, rt.resource))


def default_cost_of(proc: Processor, rt: BatchRuntime, item: Item) -> float | None:
    """What an item cost when its processor reported nothing: the batch's or processor's fixed cost, or the
    processor's cost model for this item. A model that fails on an item counts it as costing nothing."""
    if rt.cost_per_item or proc.cost_model is None:
        return rt.cost_per_item or proc.cost_per_item or None
    try:
        return proc.item_cost(item) or None
    except Exception as exc:
        log.warning("cost model of %s failed on item %s: %s", proc.name, item.id, exc)
        return None


def _finish(proc: Processor, rt: BatchRuntime, item: Item, ctx: Context, value: Any, started: float) -> Attempt:
    result = shape_result(value)
    cost = ctx.cost if ctx.cost is not None else default_cost_of(proc, rt, item)
    return Attempt(True, result, None, False, cost, started, time.time(), ctx.used)


def failed_attempt(exc: BaseException, ctx: Context | None, attempt: int, started: float) -> Attempt:
    permanent = isinstance(exc, (PermanentError, ValidationError))
    result = None
    # A processor can attach a partial result to its failure (the shell processor's output, say).
    if isinstance(getattr(exc, "result", None), dict):
        result = exc.result  # type: ignore[attr-defined]
    error = error_info(exc, attempt)
    if isinstance(exc, RetryAfter):  # kept with the error: to_outcome reads it, and users see why it waited
        error["retry_after"] = exc.seconds
    return Attempt(False, result, error, permanent, ctx.cost if ctx else None, started, time.time(),
                   ctx.used if ctx else 0.0)


def invoke(proc: Processor, rt: BatchRuntime, c: Claimed) -> Attempt:
    started = time.time()
    ctx = None
    try:
        item, ctx = make_item(proc, rt, c)
        return _finish(proc, rt, item, ctx, proc.fn(item, ctx), started)
    except Exception as exc:
        return failed_attempt(exc, ctx, c[4], started)


async def ainvoke(proc: Processor, rt: BatchRuntime, c: Claimed) -> Attempt:
    import asyncio

    started = time.time()
    ctx = None
    scope = None
    try:
        item, ctx = make_item(proc, rt, c)
        async with asyncio.timeout(proc.timeout) as scope:
            value = await proc.fn(item, ctx)
        return _finish(proc, rt, item, ctx, value, started)
    except TimeoutError as own:
        err = TimeoutError(f"item timed out after {proc.timeout}s") \
            if scope is not None and scope.expired() else own
        return failed_attempt(err, ctx, c[4], started)
    except Exception as exc:
        return failed_attempt(exc, ctx, c[4], started)


def timed_out(proc: Processor, c: Claimed, started: float) -> Attempt:
    exc = TimeoutError(f"item timed out after {proc.timeout}s")
    return Attempt(False, None, error_info(exc, c[4]), False, None, started, time.time())


def us(t: float) -> int:
    return int(t * 1_000_000)


def to_outcome(a: Attempt, c: Claimed, rt: BatchRuntime, policy: RetryPolicy) -> Outcome:
    # Plain tuples in Outcome's field order: this runs once per item.
    if a.ok:
        return (rt.pk, c[0], OK, a.result, None, us(a.started), us(a.finished),  # type: ignore[return-value]
                a.cost, None)
    decision = decide(c[4], policy, a.finished, permanent=a.permanent,
                      retry_after=a.error.get("retry_after") if a.error else None)
    if isinstance(decision, GiveUp):
        return (rt.pk, c[0], FAIL, a.result, a.error, us(a.started), us(a.finished),  # type: ignore[return-value]
                a.cost, None)
    return (rt.pk, c[0], RETRY, None, a.error, us(a.started), us(a.finished), a.cost,  # type: ignore[return-value]
            us(decision.at))


# -- child processes, for processors declared with mode="process" ----------------------------------

def _child_main(conn: Any, sources: list[str]) -> None:
    """Loop of a child process: receive (processor name, runtime, claimed), send back an Attempt."""
    try:
        registry.load(sources)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        name, rt, c = msg
        conn.send(invoke(registry.get(name), rt, c))


CHILD_START_SECONDS = 120.0


class ChildProcess:
    """One long-lived child process running items of process-mode processors."""

    def __init__(self, sources: list[str]) -> None:
        self._sources = sources
        self._alive = False
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child_conn, self._sources), daemon=True)
        self._proc.start()
        child_conn.close()
        # Start-up (a fresh interpreter importing the processors) must not count against an item's timeout.
        if not self._conn.poll(CHILD_START_SECONDS):
            self.close(kill=True)
            raise RuntimeError(f"worker process did not start within {CHILD_START_SECONDS}s")
        status, message = self._conn.recv()
        if status != "ready":
            self.close(kill=True)
            raise RuntimeError(f"worker process could not load processors: {message}")
        self._alive = True

    @property
    def alive(self) -> bool:
        return self._alive

    def run(self, proc: Processor, rt: BatchRuntime, c: Claimed) -> Attempt:
        """Run one item in the child; a timeout kills the child (the caller starts a new one)."""
        started = time.time()
        try:
            self._conn.send((proc.name, rt, c))
            if not self._conn.poll(proc.timeout):
                self.close(kill=True)
                return timed_out(proc, c, started)
            return self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as exc:
            self._proc.join(1)  # the pipe breaks as the child dies: wait for its exit status (was often None)
            code = self._proc.exitcode
            self.close(kill=True)
            err = RuntimeError(f"worker process died (exit code {code}): {exc}")
            return failed_attempt(err, None, c[4], started)

    def close(self, kill: bool = False) -> None:
        self._alive = False
        try:
            if not kill:
                self._conn.send(None)
        except OSError:
            pass
        self._proc.join(0 if kill else 2)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(2)
        self._conn.close()
