"""Helpers of the browser tests: where Chromium is, how it is launched, artifacts and the axe-core check."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("BATCHYARD_CHROMIUM", "/usr/bin/chromium"))
# What a headless Chromium in a container needs, and nothing that reaches out to the network by itself.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(os.environ.get("BATCHYARD_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "browser"
LAPTOP = {"width": 1366, "height": 768}  # the common laptop screen the dashboard must be usable on
SERIOUS = ("serious", "critical")


def unavailable(reason: str) -> None:
    """Skip, with the reason, except under CI, which must run these tests: there, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests (make test installs chromium with apt)", pytrace=False)
    pytest.skip(reason)


class Artifacts:
    """Where one test's screenshots and reports go, each recorded on the test as it is written."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.dir = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.iterdir():
            old.unlink()
        self._properties = request.node.user_properties

    def record(self, name: str, path: Path) -> None:
        self._properties.append((f"artifact:{name}", str(path)))

    def screenshot(self, page: Any, name: str) -> Path:
        path = self.dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.record(name, path)
        return path

    def write(self, name: str, data: object) -> Path:
        path = self.dir / name
        path.write_text(json.dumps(data, indent=2))
        self.record(name, path)
        return path


def assert_accessible(page: Any, artifacts: Artifacts, name: str) -> None:
    """axe-core (the copy axe-playwright-python ships) finds no serious or critical violation on the page
    as it is now; the whole report is kept as an artifact."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page).response
    artifacts.write(f"axe-{name}.json", results["violations"])
    bad = [v for v in results["violations"] if v.get("impact") in SERIOUS]
    assert not bad, f"accessibility violations on {name}:\n" + "\n".join(
        f"- {v['impact']} {v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['target']})" for v in bad)
