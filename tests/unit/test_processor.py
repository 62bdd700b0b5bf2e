"""The processor decorator, the registry and loading processors from files and modules."""

from __future__ import annotations

import logging
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from batchyard.core import processor as registry
from batchyard.core.errors import ConfigError, ProcessorNotFound
from batchyard.core.limits import RateLimit
from batchyard.core.processor import Context, Item, Processor, get, is_async, load, processor
from batchyard.core.retry import RetryPolicy


def test_sync_function_defaults_to_thread() -> None:
    @processor()
    def count_words(item: Item, ctx: Context) -> dict[str, int]:
        """Count the words of a text."""
        return {"n": len(str(item.payload).split())}

    assert isinstance(count_words, Processor)
    assert count_words.name == "count-words"
    assert count_words.mode == "thread" and not is_async(count_words)
    assert count_words.description == "Count the words of a text."
    assert count_words.retry == RetryPolicy()
    assert count_words.concurrency is None and count_words.rate_limit is None and count_words.timeout is None
    assert count_words.source == __name__
    assert get("count-words") is count_words
    assert count_words(Item("1", 1, "a b c", 1, {}), Context("b", "1", 1, logging.getLogger())) == {"n": 3}


def test_async_function_defaults_to_async() -> None:
    @processor("unit-async")
    async def fetch(item: Item, ctx: Context) -> dict[str, Any]:
        return {}

    assert fetch.mode == "async" and is_async(fetch)
    assert fetch.name == "unit-async"


def test_declared_options() -> None:
    class Params(BaseModel):
        size: int = 3

    @processor("unit-opts", description="explicit", params=Params, mode="process", concurrency=2,
               rate_limit="20/s", timeout=1.5, retry=5, cost_per_item=0.01, cost_unit="EUR", unsafe=True)
    def fn(item: Item, ctx: Context) -> None:
        """Docstring that the explicit description overrides."""

    assert (fn.description, fn.mode, fn.concurrency, fn.timeout) == ("explicit", "process", 2, 1.5)
    assert fn.rate_limit == RateLimit.parse("20/s")
    assert fn.retry == RetryPolicy(max_attempts=5)
    assert (fn.cost_per_item, fn.cost_unit, fn.unsafe) == (0.01, "EUR", True)
    d = fn.describe()
    assert d["name"] == "unit-opts" and d["rate_limit"] == "20/s" and d["max_attempts"] == 5
    assert d["params_schema"]["properties"]["size"]["default"] == 3
    policy = RetryPolicy(max_attempts=2, base_delay=0.1)
    assert processor("unit-policy", retry=policy)(lambda item, ctx: None).retry is policy


def test_mismatched_mode_is_an_error() -> None:
    def sync_fn(item: Item, ctx: Context) -> None: ...

    async def async_fn(item: Item, ctx: Context) -> None: ...

    with pytest.raises(ConfigError, match="async def"):
        processor("unit-bad-1", mode="async")(sync_fn)
    with pytest.raises(ConfigError, match="mode='async'"):
        processor("unit-bad-2", mode="thread")(async_fn)
    with pytest.raises(ConfigError):
        processor("unit-bad-3", mode="process")(async_fn)
    with pytest.raises(ConfigError, match="concurrency"):
        processor("unit-bad-4", concurrency=0)(sync_fn)
    with pytest.raises(ValueError):
        processor("unit-bad-5", rate_limit="fast")(sync_fn)
    for name in ("unit-bad-1", "unit-bad-2", "unit-bad-3", "unit-bad-4", "unit-bad-5"):
        with pytest.raises(ProcessorNotFound):
            get(name)


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ConfigError):
        processor("unit-typo", mode="proces")(lambda item, ctx: None)  # type: ignore[arg-type]


def test_get_unknown_lists_the_known() -> None:
    with pytest.raises(ProcessorNotFound, match="noop"):
        get("definitely-not-registered")
    names = [p.name for p in registry.all_processors()]
    assert {"noop", "sleep", "sha256", "shell"} <= set(names) and names == sorted(names)


def test_item_params_merge_shared_and_payload() -> None:
    class Params(BaseModel):
        a: int
        b: str = "x"

    proc = processor("unit-params", params=Params)(lambda item, ctx: None)
    item = Item("7", 7, {"a": "5"}, 1, {"a": 1, "b": "shared"}, proc)
    assert item.params == Params(a=5, b="shared")
    assert Item("1", 1, "not a dict", 1, {"a": 2}, proc).params == Params(a=2)
    with pytest.raises(ValidationError):
        _ = Item("1", 1, {"a": "nope"}, 1, {}, proc).params
    assert Item("1", 1, {"z": 1}, 1, {"y": 2}).params == {"y": 2, "z": 1}  # no model: a plain dict


def test_context() -> None:
    ctx = Context("batch_1", "item-9", 2, logging.getLogger("t"))
    assert ctx.idempotency_key == "batch_1:item-9"
    assert ctx.cost is None
    ctx.report_cost(0.25)
    ctx.report_cost(1)
    assert ctx.cost == 1.25
    ctx.progress({"step": 2})
    assert ctx.detail == {"step": 2}


def _unique() -> str:
    return "unit-" + uuid.uuid4().hex[:10]


def test_load_a_py_file(tmp_path: Path) -> None:
    name = _unique()
    (tmp_path / "helper_for_unit.py").write_text("FACTOR = 3\n")
    f = tmp_path / "procs.py"
    f.write_text(textwrap.dedent(f"""
        from batchyard import processor
        from helper_for_unit import FACTOR   # a file's neighbours are importable

        @processor({name!r}, retry=2)
        def triple(item, ctx):
            return {{"v": item.payload * FACTOR}}
    """))
    found = load([str(f)], entry_points=False)
    p = get(name)
    assert p in found and p.retry.max_attempts == 2
    assert p.fn(Item("1", 1, 2, 1, {}), None) == {"v": 6}
    load([str(f)], entry_points=False)  # loading twice is harmless
    assert get(name) is p


def test_load_a_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _unique()
    mod = "unit_mod_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{mod}.py").write_text(f"from batchyard import processor\n"
                                        f"@processor({name!r})\n"
                                        f"def f(item, ctx):\n    return item.payload\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        load([mod], entry_points=False)
        assert get(name).source == mod
    finally:
        sys.modules.pop(mod, None)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load([str(tmp_path / "nope.py")], entry_points=False)


def test_load_missing_module() -> None:
    with pytest.raises(ConfigError, match="ModuleNotFoundError"):
        load(["no_such_module_for_batchyard_tests"], entry_points=False)


@pytest.mark.parametrize("body", ["import no_such_dependency_xyz\n", "def broken(:\n", "raise RuntimeError('boom')\n"])
def test_load_file_that_fails_to_import(tmp_path: Path, body: str) -> None:
    f = tmp_path / f"bad_{uuid.uuid4().hex[:6]}.py"
    f.write_text(body)
    with pytest.raises(ConfigError, match="cannot load processors from"):
        load([str(f)], entry_points=False)


def test_load_broken_file_twice_fails_twice(tmp_path: Path) -> None:
    f = tmp_path / "broken_twice.py"
    f.write_text("raise RuntimeError('boom')\n")
    for _ in range(2):
        with pytest.raises(ConfigError):
            load([str(f)], entry_points=False)
