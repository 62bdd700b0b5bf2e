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

from batchyard.core import defaults, processor as registry
from batchyard.core.errors import PermanentError
from batchyard.core.processor import Context, Item, Processor
from batchyard.core.retry import GiveUp, RetryPolicy, decide
from batchyard.core.store import FAIL, OK, RETRY, BatchRuntime, Claimed, Outcome

log = logging.getLogger("batchyard.items")
_loads = json.loads


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


_encode = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":")).encode


def encode_result(value: Any) -> str:
    """Results are JSON objects; anything else is wrapped as ``{"value": ...}``."""
    if not isinstance(value, dict):
        value = {} if value is None else {"value": value}
    return _encode(value)


def error_info(exc: BaseException, attempt: int) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__,
            "traceback": tb[-defaults.TRACEBACK_TAIL_CHARS:], "attempt": attempt, "at": time.time()}


class Attempt:
    """What one call of a processor produced (picklable, for child processes)."""

    __slots__ = ("ok", "result", "error", "permanent", "cost", "started", "finished")

    def __init__(self, ok: bool, result: str | None, error: dict[str, Any] | None, permanent: bool,
                 cost: float | None, started: float, finished: float) -> None:
        self.ok, self.result, self.error, self.permanent = ok, result, error, permanent
        self.cost, self.started, self.finished = cost, started, finished

    def __reduce__(self) -> tuple[Any, ...]:
        return (Attempt, (self.ok, self.result, self.error, self.permanent, self.cost, self.started,
                          self.finished))


def make_item(proc: Processor, rt: BatchRuntime, c: Claimed) -> tuple[Item, Context]:
    item_id = c.key if c.key is not None else str(c.seq)
    item = Item(item_id, c.seq, _loads(c.payload), c.attempts, rt.params, proc)
    return item, Context(rt.batch_id, item_id, c.attempts, log)


def _finish(proc: Processor, rt: BatchRuntime, ctx: Context, value: Any, started: float) -> Attempt:
    try:
        result = encode_result(value)
    except (TypeError, ValueError) as exc:
        return Attempt(False, None, error_info(exc, ctx.attempt), True, ctx.cost, started, time.time())
    cost = ctx.cost if ctx.cost is not None else (rt.cost_per_item or proc.cost_per_item or None)
    return Attempt(True, result, None, False, cost, started, time.time())


def _failed(exc: BaseException, ctx: Context | None, attempt: int, started: float) -> Attempt:
    permanent = isinstance(exc, (PermanentError, ValidationError))
    result = None
    # A processor can attach a partial result to its failure (the shell processor's output, say).
    if isinstance(getattr(exc, "result", None), dict):
        try:
            result = encode_result(exc.result)  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            result = None
    return Attempt(False, result, error_info(exc, attempt), permanent, ctx.cost if ctx else None,
                   started, time.time())


def invoke(proc: Processor, rt: BatchRuntime, c: Claimed) -> Attempt:
    started = time.time()
    ctx = None
    try:
        item, ctx = make_item(proc, rt, c)
        return _finish(proc, rt, ctx, proc.fn(item, ctx), started)
    except Exception as exc:
        return _failed(exc, ctx, c.attempts, started)


async def ainvoke(proc: Processor, rt: BatchRuntime, c: Claimed) -> Attempt:
    import asyncio

    started = time.time()
    ctx = None
    try:
        item, ctx = make_item(proc, rt, c)
        coro = proc.fn(item, ctx)
        value = await (asyncio.wait_for(coro, proc.timeout) if proc.timeout else coro)
        return _finish(proc, rt, ctx, value, started)
    except TimeoutError:
        exc = TimeoutError(f"item timed out after {proc.timeout}s")
        return _failed(exc, ctx, c.attempts, started)
    except Exception as exc:
        return _failed(exc, ctx, c.attempts, started)


def timed_out(proc: Processor, c: Claimed, started: float) -> Attempt:
    exc = TimeoutError(f"item timed out after {proc.timeout}s")
    return Attempt(False, None, error_info(exc, c.attempts), False, None, started, time.time())


def to_outcome(a: Attempt, c: Claimed, rt: BatchRuntime, policy: RetryPolicy) -> Outcome:
    if a.ok:
        return Outcome(rt.pk, c.rowid, OK, a.result, None, a.started, a.finished, a.cost, None)
    err = a.error or {}
    decision = decide(c.attempts, policy, a.finished, permanent=a.permanent)
    if isinstance(decision, GiveUp):
        return Outcome(rt.pk, c.rowid, FAIL, a.result, _encode(err), a.started, a.finished, a.cost, None)
    return Outcome(rt.pk, c.rowid, RETRY, None, _encode(err), a.started, a.finished, a.cost, decision.at)


# -- child processes, for processors declared with mode="process" ----------------------------------

def _child_main(conn: Any, sources: list[str]) -> None:
    """Loop of a child process: receive (processor name, runtime, claimed), send back an Attempt."""
    registry.load(sources)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        name, rt, c = msg
        conn.send(invoke(registry.get(name), rt, c))


class ChildProcess:
    """One long-lived child process running items of process-mode processors."""

    def __init__(self, sources: list[str]) -> None:
        self._sources = sources
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child_conn, self._sources), daemon=True)
        self._proc.start()
        child_conn.close()

    def run(self, proc: Processor, rt: BatchRuntime, c: Claimed) -> Attempt:
        started = time.time()
        try:
            self._conn.send((proc.name, rt, c))
            if not self._conn.poll(proc.timeout):
                self.restart()
                return timed_out(proc, c, started)
            return self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError) as exc:
            code = self._proc.exitcode
            self.restart()
            err = RuntimeError(f"worker process died (exit code {code}): {exc}")
            return _failed(err, None, c.attempts, started)

    def restart(self) -> None:
        self.close(kill=True)
        self._start()

    def close(self, kill: bool = False) -> None:
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
