"""Processors: the decorator, the registry, and what a processor receives (an Item and a Context)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from batchyard.core.errors import ConfigError, ProcessorNotFound
from batchyard.core.limits import RateLimit
from batchyard.core.resources import Resource
from batchyard.core.retry import RetryPolicy

Mode = Literal["async", "thread", "process"]
# What an item costs, from the item (its payload and params): tokens in a prompt, bytes of a file.
CostModel = Callable[["Item"], float]
ENTRY_POINT_GROUP = "batchyard.processors"
log = logging.getLogger("batchyard.processor")


@dataclass
class Processor:
    name: str
    fn: Callable[..., Any]
    description: str = ""
    params_model: type[BaseModel] | None = None
    mode: Mode = "thread"
    concurrency: int | None = None
    rate_limit: RateLimit | None = None
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cost_per_item: float = 0.0
    cost_unit: str = "USD"
    # A function of the item instead of a fixed cost per item; None: ``cost_per_item`` for every item.
    cost_model: CostModel | None = None
    # Set up once per batch and handed to every item as ctx.resource (see core.resources).
    resource: Resource | None = None
    # Processors that run arbitrary commands are never served over HTTP without an explicit flag.
    unsafe: bool = False
    source: str | None = None

    def __call__(self, item: Item, ctx: Context) -> Any:
        return self.fn(item, ctx)

    def item_cost(self, item: Item) -> float:
        """The cost model's figure for one item (what it costs unless the processor reports otherwise)."""
        if self.cost_model is None:
            return self.cost_per_item
        return float(self.cost_model(item))

    def estimate_cost(self, payload: Any, params: dict[str, Any]) -> float:
        """``item_cost`` of an item not yet run: estimates read payloads as the processor will see them."""
        if self.cost_model is None:
            return self.cost_per_item
        return self.item_cost(Item("", 0, payload, 0, params, self))

    def params_schema(self) -> dict[str, Any] | None:
        return self.params_model.model_json_schema() if self.params_model else None

    def validate_params(self, values: dict[str, Any]) -> BaseModel | dict[str, Any]:
        """Validate a merged params dict; raises pydantic.ValidationError."""
        if self.params_model is None:
            return values
        return self.params_model.model_validate(values)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "rate_limit": self.rate_limit.text if self.rate_limit else None,
            "timeout": self.timeout,
            "max_attempts": self.retry.max_attempts,
            "cost_per_item": self.cost_per_item,
            "cost_unit": self.cost_unit,
            "cost_model": self.cost_model is not None,
            "resource": type(self.resource).__name__ if self.resource is not None else None,
            "params_schema": self.params_schema(),
        }


class Item:
    """One item as a processor sees it. ``params`` merges the batch's shared params with the item's own."""

    __slots__ = ("_params", "_processor", "_shared", "attempt", "id", "payload", "seq")

    def __init__(self, id: str, seq: int, payload: Any, attempt: int, shared: dict[str, Any],
                 processor: Processor | None = None) -> None:
        self.id = id
        self.seq = seq
        self.payload = payload
        self.attempt = attempt
        self._shared = shared
        self._processor = processor
        self._params: Any = None

    @property
    def params(self) -> Any:
        if self._params is None:
            merged = dict(self._shared)
            if isinstance(self.payload, dict):
                merged.update(self.payload)
            p = self._processor
            self._params = p.validate_params(merged) if p is not None else merged
        return self._params

    def __repr__(self) -> str:
        return f"Item(id={self.id!r}, attempt={self.attempt}, payload={self.payload!r})"


class Context:
    """Handed to a processor with each item: where it runs, and how to report cost and progress."""

    __slots__ = ("attempt", "batch_id", "cost", "detail", "item_id", "logger", "resource", "used")

    def __init__(self, batch_id: str, item_id: str, attempt: int, logger: logging.Logger,
                 resource: dict[str, Any] | None = None) -> None:
        self.batch_id = batch_id
        self.item_id = item_id
        self.attempt = attempt
        self.cost: float | None = None
        self.detail: Any = None
        self.logger = logger
        # The batch's shared resource (what its processor's Resource.setup returned), or None without one.
        self.resource = resource
        self.used = 0.0

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and workers: pass it to APIs that deduplicate requests."""
        return f"{self.batch_id}:{self.item_id}"

    def report_cost(self, amount: float) -> None:
        """Add to this item's actual cost (replaces the processor's cost_per_item for this item)."""
        self.cost = (self.cost or 0.0) + float(amount)

    def use_resource(self, amount: float) -> None:
        """Report how much of the batch's shared resource this item used (its utilisation shows on the batch)."""
        self.used += float(amount)

    def progress(self, detail: Any) -> None:
        """Attach a progress detail to the item (kept with its result)."""
        self.detail = detail


_REGISTRY: dict[str, Processor] = {}
_LOCK = threading.Lock()


def processor(
    name: str | None = None,
    *,
    description: str | None = None,
    params: type[BaseModel] | None = None,
    mode: Mode | None = None,
    concurrency: int | None = None,
    rate_limit: str | None = None,
    timeout: float | None = None,
    retry: RetryPolicy | int | None = None,
    cost_per_item: float | CostModel = 0.0,
    cost_unit: str = "USD",
    resource: type[Resource] | Resource | None = None,
    unsafe: bool = False,
) -> Callable[[Callable[..., Any]], Processor]:
    """Register ``fn(item, ctx) -> dict`` as a processor.

    ``mode`` defaults to ``async`` for coroutine functions and ``thread`` otherwise; ``process`` runs
    the function in worker processes (it must be importable from a module or file).
    ``retry`` is a RetryPolicy or a max attempt count. ``cost_per_item`` is a number, or a function of the
    item (``lambda item: item.payload["size"] / 1e9``) when items cost different amounts; either is what an
    item costs unless the processor reports its actual cost (``ctx.report_cost``), and what estimates and
    budgets count with. ``resource`` (a ``batchyard.Resource`` class or instance) is set up once per batch
    and handed to every item as ``ctx.resource``.
    """

    def register(fn: Callable[..., Any]) -> Processor:
        is_coro = inspect.iscoroutinefunction(fn)
        if mode is not None and mode not in ("async", "thread", "process"):
            raise ConfigError(f"processor {fn.__name__}: mode={mode!r}; expected 'async', 'thread' or 'process'")
        chosen: Mode = mode or ("async" if is_coro else "thread")
        if chosen == "async" and not is_coro:
            raise ConfigError(f"processor {fn.__name__}: mode='async' needs an 'async def' function")
        if chosen != "async" and is_coro:
            raise ConfigError(f"processor {fn.__name__}: an 'async def' function must use mode='async'")
        if concurrency is not None and concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        policy = RetryPolicy(max_attempts=retry) if isinstance(retry, int) else (retry or RetryPolicy())
        proc = Processor(
            name=name or fn.__name__.replace("_", "-"),
            fn=fn,
            description=description if description is not None else inspect.getdoc(fn) or "",
            params_model=params,
            mode=chosen,
            concurrency=concurrency,
            rate_limit=RateLimit.parse(rate_limit) if rate_limit else None,
            timeout=timeout,
            retry=policy,
            cost_per_item=0.0 if callable(cost_per_item) else float(cost_per_item),
            cost_unit=cost_unit,
            cost_model=cost_per_item if callable(cost_per_item) else None,
            resource=resource() if isinstance(resource, type) else resource,
            unsafe=unsafe,
            source=getattr(fn, "__module__", None),
        )
        with _LOCK:
            _REGISTRY[proc.name] = proc
        return proc

    return register


def get(name: str) -> Processor:
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ProcessorNotFound(f"no processor named {name!r} (registered: {known})") from None


def all_processors() -> list[Processor]:
    _ensure_builtins()
    return sorted(_REGISTRY.values(), key=lambda p: p.name)


def _ensure_builtins() -> None:
    if "noop" not in _REGISTRY:
        importlib.import_module("batchyard.core.builtins")


def load(sources: list[str] | tuple[str, ...] = (), entry_points: bool = True) -> list[Processor]:
    """Import processor modules: dotted module names or ``.py`` file paths; plus installed entry points."""
    _ensure_builtins()
    for src in sources:
        _load_one(src)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                log.warning("could not load processor entry point %s: %s", ep.name, exc)
    return all_processors()


def _load_one(src: str) -> None:
    import_source(src)


def import_source(src: str, what: str = "processors") -> ModuleType:
    """Import a dotted module name or a ``.py`` file (once: a second call returns the same module).

    Used for processor modules and for the server's mounted adapters; ``what`` names them in errors.
    """
    path = Path(src)
    try:
        if src.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ConfigError(f"{what} file {src!r} does not exist")
            mod_name = "batchyard_user_" + str(abs(hash(str(path.resolve()))))
            if mod_name in sys.modules:
                return sys.modules[mod_name]
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"cannot import {what} file {src!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            # A file next to its helpers should be able to import them.
            folder = str(path.resolve().parent)
            sys.path.insert(0, folder)
            try:
                spec.loader.exec_module(module)
            except BaseException:
                # Leave no half-imported module behind: loading the file again must fail again.
                sys.modules.pop(mod_name, None)
                if folder in sys.path:
                    sys.path.remove(folder)
                raise
            return module
        return importlib.import_module(src)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot load {what} from {src!r}: {type(exc).__name__}: {exc}") from exc


def format_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    """(field, message) pairs from a pydantic error, for input reports."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(item)"
        out.append((loc, err.get("msg", "invalid")))
    return out


def is_async(proc: Processor) -> bool:
    return proc.mode == "async" or asyncio.iscoroutinefunction(proc.fn)
