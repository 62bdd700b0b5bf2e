"""Throwaway PostgreSQL databases for every test that needs one (contract suite, multi-worker tests).

One database per test session (``batchyard_test_<random>``, dropped at the end; with xdist, one per worker
process) and a fresh schema per test, reached through the URL's ``search_path``: each test starts empty
without dropping or truncating anything. The server is found at ``BATCHYARD_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``; ``make pg`` starts a local one). When it cannot be reached
these tests skip with the reason, except under CI (``CI`` set), where they fail: a green CI must have run them.

Every PostgreSQL test reaches the server through ``pg_database``, so that one gate decides skip-or-fail for
all of them. Import the fixtures into a test module or conftest (``from pg_fixtures import pg_url, ...``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

ADMIN_URL = os.environ.get("BATCHYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_db(url: str, dbname: str, schema: str | None = None) -> str:
    """``url`` pointing at database ``dbname`` (and at ``schema`` first on its search path)."""
    parts = urlsplit(url)
    query = f"options={quote(f'-csearch_path={schema}')}" if schema else ""
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", query, ""))


def admin_connection() -> psycopg.Connection:
    """A connection to the server's admin database, or skip (fail under CI) saying why there is none."""
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = (f"PostgreSQL is not reachable at {ADMIN_URL} ({str(exc).strip()}); "
                  f"run `make pg` or set BATCHYARD_TEST_PG")
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the PostgreSQL store's tests, but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of its own for this test session; the URL of its default schema."""
    admin = admin_connection()
    name = f"batchyard_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_db(ADMIN_URL, name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_admin(pg_database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        yield conn


@pytest.fixture
def pg_url(pg_database: str, pg_admin: psycopg.Connection) -> str:
    """A fresh, empty schema: the store creates its tables there on first open."""
    schema = f"t_{secrets.token_hex(6)}"
    pg_admin.execute(f"CREATE SCHEMA {schema}")
    return with_db(pg_database, urlsplit(pg_database).path.lstrip("/"), schema)
