"""Store URLs are printed and logged without their password."""

from __future__ import annotations

import pytest

from batchyard.store import safe_url


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:s3cret@db:5432/batchyard", "postgresql://app:***@db:5432/batchyard"),
    ("postgres://:s3cret@db/batchyard", "postgres://:***@db/batchyard"),
    ("postgresql://app:p%40ss@db/b?sslmode=require", "postgresql://app:***@db/b?sslmode=require"),
    ("postgresql://app@db/b?sslmode=require&password=s3cret", "postgresql://app@db/b?sslmode=require&password=***"),
    ("postgresql://app@db/b?PASSWORD=s3cret&x=1", "postgresql://app@db/b?PASSWORD=***&x=1"),
    ("postgresql://app@db/batchyard", "postgresql://app@db/batchyard"),
    (".batchyard/batchyard.db", ".batchyard/batchyard.db"),
    ("sqlite:///tmp/a:b@c.db", "sqlite:///tmp/a:b@c.db"),
])
def test_safe_url_hides_passwords_only(url: str, shown: str) -> None:
    assert safe_url(url) == shown
