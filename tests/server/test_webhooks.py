"""Webhooks end to end: a real server delivering to a real local receiver, signatures verified with the
``standardwebhooks`` package, retries with backoff, progress events, the outbox surviving a restart, and
the SSRF guard refusing private targets when the server was not told to allow them."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from _receiver import Receiver
from _serve_support import API, BIN, PROCS, Proc, Server, wait_for
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from batchyard import Client
from batchyard.server.webhooks import new_secret

SECRET = new_secret()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hooks_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("BATCHYARD_WEBHOOK_BACKOFF_S", "0.2")
    monkeypatch.setenv("BATCHYARD_WEBHOOK_PROGRESS_S", "0.3")


def deliveries(s: Server, batch_id: str) -> list[dict]:  # type: ignore[type-arg]
    return httpx.get(f"{s.url}{API}/batches/{batch_id}/webhooks").json()["deliveries"]  # type: ignore[no-any-return]


def test_final_state_is_delivered_signed(start_server: Callable[..., Server], receiver: Receiver,
                                         hooks_env: None) -> None:
    s = start_server("--workers", "4", "--allow-private-network")
    with Client(s.url) as c:
        b = c.create_batch("slow", [1, 2, 3], params={"ms": 5}, webhook=receiver.url)
        c.wait(b.batch_id, timeout=15)
    wait_for(lambda: receiver.received, timeout=10)
    headers, body = receiver.received[0]
    event = Verifier(SECRET).verify(body, headers)  # raises unless signed with our secret
    assert event["type"] == "batch.completed" and event["data"]["batch_id"] == b.batch_id
    assert event["data"]["status"] == "completed" and event["data"]["items_succeeded"] == 3
    assert headers["webhook-id"].startswith("msg_") and headers["content-type"] == "application/json"
    with pytest.raises(Exception, match="signature"):
        Verifier(new_secret()).verify(body, headers)
    [d] = wait_for(lambda: [d for d in deliveries(s, b.batch_id) if d["status"] == "delivered"])
    assert d["event"] == "batch.completed" and d["delivery_id"] == headers["webhook-id"]
    assert [a["status_code"] for a in d["attempts"]] == [204]


def test_failed_deliveries_are_retried_with_the_same_id_and_body(start_server: Callable[..., Server],
                                                                 hooks_env: None) -> None:
    receiver = Receiver([500, 503, 200])
    try:
        s = start_server("--workers", "2", "--allow-private-network")
        with Client(s.url) as c:
            b = c.create_batch("slow", [1], webhook={"url": receiver.url})
            c.wait(b.batch_id, timeout=15)
        wait_for(lambda: len(receiver.received) == 3, timeout=15)
        assert len({h["webhook-id"] for h, _ in receiver.received}) == 1
        assert len({body for _, body in receiver.received}) == 1
        for headers, body in receiver.received:
            Verifier(SECRET).verify(body, headers)
        [d] = wait_for(lambda: [d for d in deliveries(s, b.batch_id) if d["status"] == "delivered"])
        assert [a["status_code"] for a in d["attempts"]] == [500, 503, 200]
        assert [a["error"] for a in d["attempts"]] == ["HTTP 500", "HTTP 503", None]
    finally:
        receiver.close()


def test_attempts_stop_at_the_limit(start_server: Callable[..., Server], hooks_env: None,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_WEBHOOK_MAX_ATTEMPTS", "2")
    receiver = Receiver([500])
    try:
        s = start_server("--workers", "2", "--allow-private-network")
        with Client(s.url) as c:
            b = c.create_batch("slow", [1], webhook=receiver.url)
            c.wait(b.batch_id, timeout=15)
        [d] = wait_for(lambda: [d for d in deliveries(s, b.batch_id) if d["status"] == "failed"], timeout=15)
        assert len(d["attempts"]) == 2 and d["next_attempt_at"] is None
    finally:
        receiver.close()


def test_progress_events_come_before_the_final_one(start_server: Callable[..., Server], receiver: Receiver,
                                                   hooks_env: None) -> None:
    s = start_server("--workers", "2", "--allow-private-network")
    with Client(s.url) as c:
        b = c.create_batch("slow", list(range(30)), params={"ms": 60}, parallel_jobs=2,
                           webhook={"url": receiver.url, "progress": True})
        c.wait(b.batch_id, timeout=30)
    wait_for(lambda: any(e["type"] == "batch.completed" for e in receiver.events()), timeout=10)
    types = [e["type"] for e in receiver.events()]
    assert types[-1] == "batch.completed" and types.count("batch.progress") >= 2
    done = [e["data"]["items_succeeded"] for e in receiver.events() if e["type"] == "batch.progress"]
    assert done == sorted(done) and done[-1] < 30


def test_server_default_webhook_and_upload_form_fields(start_server: Callable[..., Server], receiver: Receiver,
                                                       hooks_env: None) -> None:
    other = Receiver()
    try:
        s = start_server("--workers", "2", "--allow-private-network", "--webhook-url", receiver.url)
        with Client(s.url) as c:
            a = c.create_batch("slow", [1])
            c.wait(a.batch_id, timeout=15)
            r = httpx.post(f"{s.url}{API}/batches/upload", files={"file": ("x.txt", b"1\n2\n")},
                           data={"processor": "slow", "webhook_url": other.url})
            assert r.status_code == 201, r.text
            c.wait(r.json()["batch_id"], timeout=15)
        wait_for(lambda: receiver.received and other.received, timeout=10)
        assert [e["data"]["batch_id"] for e in receiver.events()] == [a.batch_id]
        assert [e["data"]["batch_id"] for e in other.events()] == [r.json()["batch_id"]]
    finally:
        other.close()


def test_outbox_survives_the_server_and_works_with_a_separate_worker(
        start_server: Callable[..., Server], receiver: Receiver, tmp_path: Path) -> None:
    """The worker finishes the batch while no server runs; the next server delivers the event, signed
    with the secret the store generated (no BATCHYARD_WEBHOOK_SECRET here)."""
    store = tmp_path / "store.db"
    s = start_server("--workers", "0", "--allow-private-network", store=store)
    with Client(s.url) as c:
        b = c.create_batch("slow", list(range(20)), params={"ms": 30}, parallel_jobs=4, webhook=receiver.url)
    s.signal(signal.SIGKILL)
    s.wait(10)
    w = Proc(["worker", "--store", str(store), "--processors", str(PROCS), "--concurrency", "4"],
             tmp_path / "worker.log")
    try:
        from batchyard.store.sqlite import SQLiteStore

        st = SQLiteStore(store)
        wait_for(lambda: st.get_batch(b.batch_id).status == "completed", timeout=20)
        assert [d.status for d in st.list_deliveries(b.batch_id)] == ["pending"]
        assert receiver.received == []
        st.close()
        s2 = start_server("--workers", "0", "--allow-private-network", store=store)
        wait_for(lambda: receiver.received, timeout=10)
        secret = subprocess.run([str(BIN), "webhook-secret", "--store", str(store)], capture_output=True,
                                text=True, check=True).stdout.strip()
        headers, body = receiver.received[0]
        assert Verifier(secret).verify(body, headers)["type"] == "batch.completed"
        assert [d["status"] for d in wait_for(lambda: deliveries(s2, b.batch_id))] in (["delivered"], ["pending"])
    finally:
        w.stop()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://169.254.169.254/x",
                                 "http://[::1]/hook", "http://10.1.2.3/hook", "http://192.168.0.1/"])
def test_private_webhook_targets_are_refused_without_the_flag(server: Server, url: str) -> None:
    before = httpx.get(f"{server.url}{API}/batches").json()["batches"]
    r = httpx.post(f"{server.url}{API}/batches", json={"processor": "slow", "items": [1], "webhook": url})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "url_not_allowed"
    assert httpx.get(f"{server.url}{API}/batches").json()["batches"] == before


def test_webhook_must_be_an_http_url(server: Server) -> None:
    r = httpx.post(f"{server.url}{API}/batches", json={"processor": "slow", "items": [1], "webhook": "ftp://x/y"})
    assert r.status_code == 422 and "http" in r.text


def test_redirects_are_failures_and_410_disables_the_endpoint(start_server: Callable[..., Server],
                                                              hooks_env: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_WEBHOOK_MAX_ATTEMPTS", "2")
    moved, gone = Receiver([302]), Receiver([410])
    try:
        s = start_server("--workers", "2", "--allow-private-network")
        with Client(s.url) as c:
            a = c.create_batch("slow", [1], webhook=moved.url)
            b = c.create_batch("slow", [1], webhook=gone.url)
            for x in (a, b):
                c.wait(x.batch_id, timeout=15)
            [da] = wait_for(lambda: [d for d in deliveries(s, a.batch_id) if d["status"] == "failed"], timeout=15)
            assert [x["status_code"] for x in da["attempts"]] == [302, 302]
            assert "redirects are not followed" in da["attempts"][0]["error"]
            [db] = wait_for(lambda: [d for d in deliveries(s, b.batch_id) if d["status"] == "failed"], timeout=15)
            assert len(db["attempts"]) == 1 and "410" in db["attempts"][0]["error"]
            later = c.create_batch("slow", [2], webhook=gone.url)
            c.wait(later.batch_id, timeout=15)
            [dl] = wait_for(lambda: [d for d in deliveries(s, later.batch_id) if d["status"] == "failed"],
                            timeout=15)
            assert dl["attempts"][0]["status_code"] is None and "disabled" in dl["attempts"][0]["error"]
        assert len(gone.received) == 1 and len(moved.received) == 2
    finally:
        moved.close()
        gone.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_server_killed_between_attempts_resumes_them_with_the_same_id(
        start_server: Callable[..., Server], hooks_env: None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """500, (kill -9 of the server, a new one on the store), 500, 200: delivered once acknowledged, every attempt
    with the same webhook-id and body, each verifiable, and nothing sent after the 200."""
    monkeypatch.setenv("BATCHYARD_WEBHOOK_BACKOFF_S", "1.5")  # long enough to kill the server between attempts
    receiver = Receiver([500, 500, 200])
    store = tmp_path / "store.db"
    try:
        s = start_server("--workers", "2", "--allow-private-network", store=store)
        with Client(s.url) as c:
            b = c.create_batch("slow", [1], webhook=receiver.url)
        wait_for(lambda: len(receiver.received) == 1, timeout=15)
        s.signal(signal.SIGKILL)
        s.wait(10)
        s2 = start_server("--workers", "2", "--allow-private-network", store=store)
        wait_for(lambda: len(receiver.received) == 3, timeout=30)
        [d] = wait_for(lambda: [d for d in deliveries(s2, b.batch_id) if d["status"] == "delivered"], timeout=10)
        assert [a["status_code"] for a in d["attempts"]] == [500, 500, 200]
        ids = {h["webhook-id"] for h, _ in receiver.received}
        assert ids == {d["delivery_id"]} and len({body for _, body in receiver.received}) == 1
        for headers, body in receiver.received:
            assert Verifier(SECRET).verify(body, headers)["data"]["batch_id"] == b.batch_id
        time.sleep(2)  # past the backoff: an acknowledged delivery is not sent again
        assert len(receiver.received) == 3
    finally:
        receiver.close()


def test_one_tampered_byte_fails_verification(start_server: Callable[..., Server], receiver: Receiver,
                                              hooks_env: None) -> None:
    s = start_server("--workers", "2", "--allow-private-network")
    with Client(s.url) as c:
        b = c.create_batch("slow", [1], webhook=receiver.url)
        c.wait(b.batch_id, timeout=15)
    wait_for(lambda: receiver.received, timeout=10)
    headers, body = receiver.received[0]
    Verifier(SECRET).verify(body, headers)
    for i in (0, len(body) // 2, len(body) - 1):  # any byte of the body
        tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
        with pytest.raises(WebhookVerificationError):
            Verifier(SECRET).verify(tampered, headers)
    for name in ("webhook-id", "webhook-timestamp"):  # the signed headers
        value = headers[name]
        changed = {**headers, name: value[:-1] + ("0" if value[-1] != "0" else "1")}
        with pytest.raises(WebhookVerificationError):
            Verifier(SECRET).verify(body, changed)
