"""Unit-test fixtures: processors registered by a test do not leak into the next one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchyard.core import processor as registry


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    registry._ensure_builtins()  # before the snapshot: builtins register only on first import
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
