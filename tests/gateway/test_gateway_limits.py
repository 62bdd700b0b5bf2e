"""Upstream limits: the pacing and AIMD arithmetic, then the limits kept by real servers, shared by two of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from statistics import mean

import httpx
import pytest
from _gateway_support import chat_lines, client, upload, wait_status
from _serve_support import Server

from batchyard.gateway import limits
from batchyard.gateway.limits import Nominal
from batchyard.gateway.mock_upstream import MockUpstream

# -- the arithmetic -------------------------------------------------------------------------------


def test_reservations_are_evenly_spaced_and_reach_one_horizon_ahead() -> None:
    nominal = Nominal(rpm=600)  # 10 a second
    state, times = None, []
    for _ in range(12):
        state, at, ok = limits.reserve(state, 100.0, nominal, 10)
        if ok:
            times.append(at)
    assert times == pytest.approx([100.0 + i / 10 for i in range(11)])  # 0.0 .. 1.0 s ahead, then no more
    state, at, ok = limits.reserve(state, 100.0, nominal, 10)
    assert not ok and at == pytest.approx(100.1)  # ask again when the next slot is within the horizon


def test_tokens_pace_requests_and_usage_corrects_the_estimate() -> None:
    nominal = Nominal(tpm=6000)  # 100 tokens a second
    state, at1, _ = limits.reserve(None, 0.0, nominal, 50)
    state, at2, _ = limits.reserve(state, 0.0, nominal, 50)
    assert (at1, at2) == pytest.approx((0.0, 0.5))
    state = limits.correct_tokens(state, 0.0, nominal, 50, 10)  # it used 10, not 50: 0.4 s given back
    _, at3, _ = limits.reserve(state, 0.0, nominal, 50)
    assert at3 == pytest.approx(0.6)


def test_a_429_halves_the_rate_once_per_episode_holds_sends_and_recovers_additively() -> None:
    nominal = Nominal(rpm=600, increase_per_s=0.25)
    s = limits.throttled(None, 10.0, nominal, 429, 2.0, None)
    s = limits.throttled(s, 10.2, nominal, 429, 2.0, None)  # the same episode: no second cut
    assert s["factor"] == 0.5 and limits.effective_rps(s) == 5.0 and s["throttles"] == 2
    _, at, ok = limits.reserve(s, 10.3, nominal, 1)
    assert not ok and at == pytest.approx(11.2)  # nothing is sent before Retry-After: ask again then
    _, at, ok = limits.reserve(s, 11.2, nominal, 1)
    assert ok and at == pytest.approx(12.2)
    s = limits.throttled(s, 11.5, nominal, 503, None, None)  # a new episode: cut again
    assert s["factor"] == 0.25
    s = limits.recover(s, 14.5, nominal)  # back-off over at 12.5, then +0.25 a second
    assert abs(s["factor"] - 0.25 - 0.25 * (14.5 - 11.5)) < 1e-9 or s["factor"] == 1.0
    s = limits.recover(s, 30.0, nominal)
    assert s["factor"] == 1.0
    view = limits.describe(s, 30.0)
    assert view["requests_per_minute"] == 600 and len(view["events"]) == 3 and view["events"][0]["decreased"]


def test_without_a_configured_rate_a_429_learns_one_and_lifts_it_later() -> None:
    nominal = Nominal(increase_per_s=0.5)
    assert limits.unlimited(None, 0.0)
    s = limits.throttled(None, 0.0, nominal, 429, 0.0, sending_rps=40.0)
    assert limits.effective_rps(s) == 20.0 and not limits.unlimited(s, 0.0)
    s = limits.recover(s, 1.0, nominal)
    assert limits.effective_rps(s) == 40.0
    s = limits.recover(s, 3.0, nominal)
    assert limits.effective_rps(s) is None and limits.unlimited(s, 3.0)  # twice where it was refused: lifted


# -- real servers -----------------------------------------------------------------------------------


def test_the_rate_limit_is_kept_and_used(start_gateway: Callable[..., Server], upstream: MockUpstream) -> None:
    upstream.behaviour.latency_ms = 20
    upstream.behaviour.rpm = 3000  # the upstream enforces the same 50 a second (429 beyond)
    s = start_gateway("--upstream-rpm", "3000")
    c = client(s)
    b = c.batches.create(input_file_id=upload(c, chat_lines(250)).id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    assert wait_status(c, b.id, timeout=60).status == "completed"
    assert upstream.stats.refused_by_limit == 0  # batchyard never went over
    series = [n for _, n in upstream.rate_series()]
    steady = series[1:-1]  # whole seconds
    assert max(series) <= 52, series
    assert mean(steady) >= 0.85 * 50, series


def _health_running(url: str, batch_id: str) -> int:
    try:
        workers = httpx.get(url + "/api/v1/health", timeout=2).json()["workers"]
    except (httpx.HTTPError, KeyError, ValueError):
        return 0
    return sum(w.get("running", {}).get(batch_id, 0) for w in workers)


def test_aimd_is_shared_by_two_servers_on_one_store(start_gateway: Callable[..., Server],
                                                    upstream: MockUpstream) -> None:
    upstream.behaviour.latency_ms = 20
    upstream.behaviour.retry_after = 0.5
    extra = ("--upstream-rpm", "1800", "--upstream-recovery-s", "1", "--workers", "16")
    a = start_gateway(*extra)
    b_srv = start_gateway(*extra, store=a.store)
    c = client(a)
    batch = c.batches.create(input_file_id=upload(c, chat_lines(480)).id, endpoint="/v1/chat/completions",
                             completion_window="24h")
    t0 = time.monotonic()
    running: dict[str, int] = {a.url: 0, b_srv.url: 0}
    stop = threading.Event()

    def drive() -> None:
        # 0-3 s as allowed (30 a second); 3-6 s the upstream allows 10 a second (429 beyond); then free again.
        while not stop.is_set():
            elapsed = time.monotonic() - t0
            upstream.behaviour.rpm = 600 if 3 <= elapsed < 6 else None
            for url in running:
                running[url] = max(running[url], _health_running(url, batch.id))
            time.sleep(0.1)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        done = wait_status(c, batch.id, timeout=90)
    finally:
        stop.set()
        driver.join()
    assert done.status == "completed" and done.request_counts.completed == 480
    assert all(n > 0 for n in running.values()), running  # both servers' workers sent requests
    series = upstream.rate_series()
    first = series[0][0]
    at = {sec - first: n for sec, n in series}
    before = mean(at.get(i, 0) for i in (1, 2))
    throttled = mean(at.get(i, 0) for i in (5, 6))
    after = mean(at.get(i, 0) for i in (9, 10, 11))
    assert before >= 0.8 * 30, series
    assert throttled <= 0.6 * before, series  # every sender slowed down after the 429s
    assert after >= 0.8 * before, series  # and came back
    assert upstream.stats.refused_by_limit > 0
    view = done.batchyard["upstream"]
    assert view["throttles"] > 0 and view["events"] and view["configured_requests_per_minute"] == 1800
