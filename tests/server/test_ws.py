"""WebSockets (per batch and server-wide) and the server-wide SSE stream, against a real server.

Per batch: the same events as SSE, a normal close after the final state, 4404 for an unknown batch,
resuming with ``last_event_id``. Server-wide (``/events``, ``/ws``): batches running before the client
connected and batches created after it both appear, each at most a few times a second. And the same when
the items run in a separate ``batchyard worker`` process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _serve_support import API, PROCS, Proc, Server, wait_for
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from batchyard import Client
from batchyard.client import StreamEvent

Message = dict[str, Any]


def receive(ws: ClientConnection, until: Callable[[list[Message]], bool] | None = None,
            timeout: float = 20) -> tuple[list[Message], int | None]:
    """Messages until the server closes (and its close code), or until ``until(messages)`` holds (code None)."""
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            out.append(json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01))))
            if until is not None and until(out):
                return out, None
    except ConnectionClosed:
        return out, ws.close_code


def ws_events(url: str, timeout: float = 20) -> tuple[list[Message], int | None]:
    with connect(url, open_timeout=5) as ws:
        return receive(ws, timeout=timeout)


def stamp(event_id: str) -> int:
    return int(event_id.split("-")[0])


def final_seen(ids: set[str]) -> Callable[[list[Message]], bool]:
    """True once every batch of ``ids`` has had an event in a final state."""
    def check(msgs: list[Message]) -> bool:
        done = {m["data"]["batch"]["batch_id"] for m in msgs if m["data"]["batch"]["status"] == "completed"}
        return ids <= done
    return check


def check_batch_stream(msgs: list[Message], batch_id: str, total: int) -> None:
    """The shape every batch's events have, on any transport: state first, progress between, final state."""
    mine = [m for m in msgs if m["data"]["batch"]["batch_id"] == batch_id]
    kinds = [m["event"] for m in mine]
    assert kinds[0] == "state" and kinds[-1] == "state" and "progress" in kinds, kinds
    assert all(m["data"]["type"] == m["event"] for m in mine)
    assert mine[-1]["data"]["batch"]["status"] == "completed"
    done = [m["data"]["batch"]["items_succeeded"] for m in mine]
    assert done == sorted(done) and done[-1] == total


# -- one batch -----------------------------------------------------------------------------------


def test_ws_sends_the_sse_events_and_closes_normally(client: Client) -> None:
    b = client.create_batch("slow", list(range(30)), params={"ms": 40}, parallel_jobs=3)
    started = time.monotonic()
    msgs, code = ws_events(client.ws_url(b.batch_id))
    elapsed = time.monotonic() - started
    assert code == 1000
    assert msgs[0]["data"]["batch"]["status"] == "running"
    check_batch_stream(msgs, b.batch_id, 30)
    stamps = [stamp(m["id"]) for m in msgs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(m["id"] == f"{stamp(m['id'])}-{m['data']['batch']['status']}" for m in msgs), "the SSE ids"
    assert len(msgs) <= elapsed * 4 + 3, "at most a few events per second"
    # the SSE stream of the finished batch, resumed from the WebSocket's last id: the same id space
    assert list(client.events(b.batch_id, last_event_id=msgs[-1]["id"])) == []


def test_ws_unknown_batch_closes_4404_with_an_error(client: Client) -> None:
    msgs, code = ws_events(client.ws_url("batch_does_not_exist"))
    assert code == 4404
    assert [m["error"]["code"] for m in msgs] == ["batch_not_found"]


def test_ws_resume_skips_what_was_seen(client: Client) -> None:
    b = client.create_batch("slow", list(range(40)), params={"ms": 30}, parallel_jobs=2)
    with connect(client.ws_url(b.batch_id), open_timeout=5) as ws:
        first, _ = receive(ws, until=lambda ms: len(ms) == 2)
    assert [m["event"] for m in first] == ["state", "progress"]
    seen = first[-1]
    rest, code = ws_events(client.ws_url(b.batch_id, last_event_id=seen["id"]))
    assert code == 1000 and rest and rest[0]["event"] == "progress", rest[:1]
    assert stamp(rest[0]["id"]) > stamp(seen["id"])
    assert rest[0]["data"]["batch"]["items_succeeded"] >= seen["data"]["batch"]["items_succeeded"]
    assert rest[-1]["data"]["batch"]["status"] == "completed"
    # resumed past the final state: nothing to say, a normal close
    assert ws_events(client.ws_url(b.batch_id, last_event_id=rest[-1]["id"])) == ([], 1000)


# -- every batch ---------------------------------------------------------------------------------


def follow_sse(client: Client, ids: set[str], out: list[StreamEvent]) -> threading.Thread:
    """Collect the server-wide SSE stream in a thread until every batch of ``ids`` is final."""
    def run() -> None:
        events = client.events(read_timeout=20)
        try:
            for ev in events:
                out.append(ev)
                if ids <= {e.batch.batch_id for e in out if e.batch.is_final}:
                    return
        finally:
            events.close()  # type: ignore[attr-defined]

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def as_messages(events: list[StreamEvent]) -> list[Message]:
    return [{"event": e.type, "id": e.id, "data": {"type": e.type, "batch": e.batch.model_dump(mode="json")}}
            for e in events]


def test_server_wide_streams_carry_every_batch(client: Client) -> None:
    before = [client.create_batch("slow", list(range(20)), params={"ms": 60}, parallel_jobs=2) for _ in range(2)]
    ids = {b.batch_id for b in before}
    sse: list[StreamEvent] = []
    with connect(client.ws_url(), open_timeout=5) as ws:
        follower = follow_sse(client, ids, sse)
        wait_for(lambda: any(e.batch.batch_id in ids for e in sse), timeout=10)  # both streams are live now
        after = client.create_batch("slow", list(range(20)), params={"ms": 60}, parallel_jobs=2)
        ids.add(after.batch_id)
        started = time.monotonic()
        msgs, code = receive(ws, until=final_seen(ids))
        elapsed = time.monotonic() - started
    follower.join(20)
    assert code is None and not follower.is_alive()
    for stream in (msgs, as_messages(sse)):
        check_batch_stream(stream, after.batch_id, 20)  # created after connecting: told from its start
        for b in before:  # running when the client connected: told from then on, to the end
            mine = [m for m in stream if m["data"]["batch"]["batch_id"] == b.batch_id]
            assert mine[0]["event"] == "state" and mine[-1]["data"]["batch"]["status"] == "completed"
    mine = [m for m in msgs if m["data"]["batch"]["batch_id"] == after.batch_id]
    assert mine[0]["data"]["batch"]["items_succeeded"] < 20
    assert len(mine) <= elapsed * 4 + 3, "at most a few events per second per batch"
    marks = [stamp(m["id"]) for m in msgs]
    assert marks == sorted(marks), "event ids carry a high-water mark that never goes back"
    assert all(m["id"].endswith("-" + m["data"]["batch"]["batch_id"]) for m in msgs)


def test_server_wide_resume_with_last_event_id(client: Client) -> None:
    b = client.create_batch("slow", list(range(40)), params={"ms": 30}, parallel_jobs=2)
    with connect(client.ws_url(), open_timeout=5) as ws:
        first, _ = receive(ws, until=lambda ms: any(m["data"]["batch"]["batch_id"] == b.batch_id for m in ms))
    client.wait(b.batch_id, timeout=20)
    # the mark of an event while the batch ran: what changed since (the final state) comes on resume,
    # on both transports
    with connect(client.ws_url(last_event_id=first[-1]["id"]), open_timeout=5) as ws:
        resumed, _ = receive(ws, until=final_seen({b.batch_id}))
    assert resumed[-1]["data"]["batch"]["items_succeeded"] == 40
    events = client.events(last_event_id=first[-1]["id"], read_timeout=20)
    try:
        final = next(e for e in events if e.batch.batch_id == b.batch_id and e.batch.is_final)
    finally:
        events.close()  # type: ignore[attr-defined]
    assert final.batch.items_succeeded == 40 and stamp(final.id) >= stamp(first[-1]["id"])


def test_ws_routes_refuse_unknown_paths(server: Server) -> None:
    """An unknown WebSocket path fails the handshake, so the 4404 above is the route's own answer."""
    try:
        with connect(server.url.replace("http", "ws") + API + "/nowhere/ws", open_timeout=5):
            raise AssertionError("handshake accepted")
    except InvalidStatus as exc:
        assert exc.response.status_code in (403, 404)


# -- a separate worker process -------------------------------------------------------------------


def test_events_when_items_run_in_a_separate_worker(start_server: Callable[..., Server], tmp_path: Path) -> None:
    s = start_server("--workers", "0")
    with Client(s.url, timeout=10) as c:
        b = c.create_batch("slow", list(range(40)), params={"ms": 60}, parallel_jobs=4)
        with connect(c.ws_url(), open_timeout=5) as everything, \
                connect(c.ws_url(b.batch_id), open_timeout=5) as one:
            # nothing runs yet: the batch's first state, then silence
            first, _ = receive(one, until=lambda ms: len(ms) == 1)
            assert first[0]["data"]["batch"]["items_succeeded"] == 0
            w = Proc(["worker", "--store", str(s.store), "--processors", str(PROCS), "--concurrency", "4"],
                     tmp_path / "worker.log")
            try:
                rest, code = receive(one)
                wide, _ = receive(everything, until=final_seen({b.batch_id}))
            finally:
                w.stop()
    assert code == 1000, w.output()
    check_batch_stream(first + rest, b.batch_id, 40)
    check_batch_stream(wide, b.batch_id, 40)
