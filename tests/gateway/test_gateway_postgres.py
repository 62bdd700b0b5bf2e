"""The gateway on the PostgreSQL store: files, shared limits and the round trip, with two servers on one database."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from _gateway_support import chat_lines, client, jsonl, upload, wait_status
from _serve_support import Server

from batchyard.gateway.mock_upstream import MockUpstream

ADMIN_URL = os.environ.get("BATCHYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A schema of its own in the server's database (dropped afterwards)."""
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the PostgreSQL tests, but PostgreSQL is not reachable: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_URL}")
    schema = f"gateway_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        parts = urlsplit(ADMIN_URL)
        try:
            yield urlunsplit((parts.scheme, parts.netloc, parts.path, f"options={quote(f'-csearch_path={schema}')}",
                              ""))
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_round_trip_on_postgres_with_two_servers(start_gateway: Callable[..., Server], upstream: MockUpstream,
                                                 pg_url: str, tmp_path: Path) -> None:
    upstream.behaviour.latency_ms = 20
    upstream.behaviour.rpm = 1200
    a = start_gateway("--upstream-rpm", "1200", store=pg_url)  # type: ignore[arg-type]
    b = start_gateway("--upstream-rpm", "1200", store=pg_url)  # type: ignore[arg-type]
    ca, cb = client(a), client(b)
    f = upload(ca, chat_lines(80))
    assert cb.files.retrieve(f.id).bytes == f.bytes  # the file is in the database, for every server
    batch = ca.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_status(cb, batch.id, timeout=60)
    assert done.status == "completed" and done.request_counts.completed == 80
    assert sorted(line["custom_id"] for line in jsonl(ca, done.output_file_id)) == sorted(
        f"req-{i}" for i in range(80))
    assert upstream.stats.refused_by_limit == 0  # both servers paced by the one document in the database
    assert done.batchyard["upstream"]["sent_paced"] >= 80
