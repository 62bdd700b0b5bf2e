"""The dashboard in a real browser: Playwright (Python) driving Debian's ``chromium`` headless.

Playwright's own browser downloads are never used (``playwright install`` is not needed): the tests launch
``/usr/bin/chromium`` (``make test`` installs it with apt when missing; ``BATCHYARD_CHROMIUM`` names another
binary). Without it, or without the ``playwright`` package, the tests skip with the reason, except under CI
(``CI`` set), where they fail: CI must run them.

Screenshots of each page and the accessibility reports go to ``test-artifacts/browser/<test>/`` (git-ignored;
``BATCHYARD_TEST_ARTIFACTS`` moves it); each is also recorded on the test (``record_property``, so a JUnit
report lists it) and listed at the end of the run. A failing test leaves a screenshot of every open tab.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))  # the real-server helpers of tests/server

from _browser_support import CHROMIUM, CHROMIUM_ARGS, LAPTOP, Artifacts, unavailable
from _serve_support import Server

FAILED = pytest.StashKey[bool]()


@pytest.fixture
def browser() -> Iterator[Any]:
    """A Chromium per test: Playwright's sync API keeps its asyncio loop running in this thread while it
    is open, so a longer-lived one would break any later test in the same worker that calls asyncio.run()."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium, or `make browser`)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Artifacts:
    return Artifacts(request)


@pytest.fixture
def context(browser: Any, artifacts: Artifacts, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser profile (its own storage) with a laptop-sized window; uncaught page errors fail."""
    ctx = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    ctx.set_default_timeout(15_000)
    errors: list[str] = []
    ctx.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
    yield ctx
    if request.node.stash.get(FAILED, False):
        for i, page in enumerate(ctx.pages):
            try:
                artifacts.screenshot(page, f"failure-tab{i}")
            except Exception as exc:  # a crashed page: the test's own error says more
                print(f"no failure screenshot of tab {i}: {exc}")
    ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def start_server(tmp_path: Path, artifacts: Artifacts,
                 request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """Real ``batchyard serve`` processes (their logs join the artifacts when the test fails)."""
    started: list[Server] = []

    def start(*extra: str) -> Server:
        s = Server(tmp_path / "store.db", tmp_path / f"server{len(started)}.log", *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
        if request.node.stash.get(FAILED, False):
            target = artifacts.dir / s.log.name
            target.write_text(s.output())
            artifacts.record(s.log.name, target)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    paths = [value for reports in terminalreporter.stats.values() for rep in reports
             for key, value in getattr(rep, "user_properties", ()) if str(key).startswith("artifact:")]
    if paths:
        terminalreporter.write_line(f"browser artifacts: {len(paths)} files under {Path(paths[0]).parents[1]}")
