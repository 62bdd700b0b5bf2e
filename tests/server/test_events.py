"""Server-Sent Events: in order, at a bounded rate, resumable with Last-Event-ID; Client.wait and AsyncClient."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
from _serve_support import API, Server
from httpx_sse import connect_sse

from batchyard import AsyncClient, Client


def read_events(server: Server, batch_id: str, last_id: str | None = None) -> list[tuple[str, str, dict]]:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with httpx.Client(base_url=server.url + API, timeout=httpx.Timeout(10)) as h, \
            connect_sse(h, "GET", f"/batches/{batch_id}/events", headers=headers) as es:
        assert es.response.headers["content-type"].startswith("text/event-stream")
        return [(sse.id, sse.event, json.loads(sse.data)) for sse in es.iter_sse()]


def test_events_arrive_in_order_and_end_at_the_final_state(server: Server, client: Client) -> None:
    b = client.create_batch("slow", list(range(30)), params={"ms": 40}, parallel_jobs=3)
    started = time.monotonic()
    events = read_events(server, b.batch_id)
    elapsed = time.monotonic() - started
    kinds = [k for _, k, _ in events]
    assert kinds[0] == "state" and kinds[-1] == "state", kinds
    assert set(kinds[1:-1]) <= {"progress"} and "progress" in kinds
    statuses = [d["batch"]["status"] for _, _, d in events]
    assert statuses[0] == "running" and statuses[-1] == "completed"
    done = [d["batch"]["items_succeeded"] for _, _, d in events]
    assert done == sorted(done) and done[-1] == 30
    stamps = [int(i.split("-")[0]) for i, _, _ in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(d["type"] == k for _, k, d in events)
    assert len(events) <= elapsed * 4 + 3, "at most a few events per second"

    # resuming after the last event: nothing new, the stream ends at once
    assert read_events(server, b.batch_id, last_id=events[-1][0]) == []
    # resuming from the middle: one catch-up event with the state now, not a replay
    caught_up = read_events(server, b.batch_id, last_id=events[1][0])
    assert [(k, d["batch"]["status"]) for _, k, d in caught_up] == [("state", "completed")]


def test_resume_while_running_gets_only_newer_events(server: Server, client: Client) -> None:
    b = client.create_batch("slow", list(range(40)), params={"ms": 30}, parallel_jobs=2)
    with httpx.Client(base_url=server.url + API, timeout=10) as h, \
            connect_sse(h, "GET", f"/batches/{b.batch_id}/events") as es:
        it = es.iter_sse()
        first, second = next(it), next(it)
    assert (first.event, second.event) == ("state", "progress")
    rest = read_events(server, b.batch_id, last_id=second.id)
    assert rest and rest[0][1] == "progress" and rest[-1][2]["batch"]["status"] == "completed"
    assert int(rest[0][0].split("-")[0]) > int(second.id.split("-")[0])
    assert rest[0][2]["batch"]["items_succeeded"] >= json.loads(second.data)["batch"]["items_succeeded"]


def test_wait_reports_progress(client: Client) -> None:
    b = client.create_batch("slow", list(range(20)), params={"ms": 30}, parallel_jobs=2)
    seen = []
    final = client.wait(b.batch_id, on_progress=lambda info: seen.append(info.progress_percent), timeout=15)
    assert final.status == "completed" and seen[-1] == 100.0 and seen == sorted(seen) and len(seen) >= 2


def test_async_client(server: Server, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncClient(server.url) as ac:
            b = await ac.create_batch("slow", ["x", "y", "z"], params={"ms": 20})
            seen = []
            final = await ac.wait(b.batch_id, on_progress=seen.append, timeout=10)
            assert final.status == "completed" and seen
            assert [it.payload async for it in ac.iter_items(b.batch_id)] == ["x", "y", "z"]
            path = await ac.results(b.batch_id, tmp_path / "r.json")
            assert json.loads(path.read_text())["summary"]["succeeded"] == 3
            assert (await ac.get_item(b.batch_id, "2")).result == {"value": "y"}
            assert (await ac.health()).status == "ok"

    asyncio.run(main())
