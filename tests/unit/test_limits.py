"""Rate limits: parsing, the token bucket, and the ceiling over any window of the limit's span."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchyard.core.limits import GUARD_SECONDS, RateLimit, take_tokens


@pytest.mark.parametrize(("text", "count", "window", "burst"), [
    ("20/s", 20, 1.0, 2.0),
    ("600/min", 600, 60.0, 2.0),
    ("1000/h", 1000, 3600.0, 1.0),
    ("5/10s", 5, 10.0, 1.0),
    ("3/2m", 3, 120.0, 1.0),
    ("1/day", 1, 86400.0, 1.0),
    ("2.5/s", 2, 0.8, 1.0),
    ("100/second", 100, 1.0, 10.0),
    ("90/minute", 90, 60.0, 1.0),
    ("7/hour", 7, 3600.0, 1.0),
    ("  20 / S ", 20, 1.0, 2.0),
    ("60/Min", 60, 60.0, 1.0),
])
def test_parse_good(text: str, count: int, window: float, burst: float) -> None:
    """A bucket of ``burst`` refilled at ``per_second`` starts at most ``count`` in any window (plus the guard
    for items that start a little after their claim), and runs at no less than 80% of the limit."""
    r = RateLimit.parse(text)
    assert r.burst == pytest.approx(burst)
    assert r.burst + r.per_second * (window + GUARD_SECONDS) < count + 1
    assert 0.8 * count / window <= r.per_second < count / window
    assert r.text == text


@pytest.mark.parametrize("text", [
    "", "abc", "20", "/s", "20/", "0/s", "0.0/min", "-1/s", "20/fortnight", "20/s/s", "1e3/s", "twenty/s",
    "20 per second", "s/20",
    pytest.param("5/0s"),
])
def test_parse_bad(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit.parse(text)


LIMIT = RateLimit(per_second=10.0, burst=10.0, text="a plain bucket")


def test_full_bucket_gives_what_is_asked_up_to_burst() -> None:
    assert take_tokens(10, 100.0, 100.0, 3, LIMIT) == (3, 7)
    assert take_tokens(10, 100.0, 100.0, 50, LIMIT) == (10, 0)


def test_empty_bucket_refills_with_time() -> None:
    assert take_tokens(0, 100.0, 100.0, 5, LIMIT)[0] == 0
    taken, left = take_tokens(0, 100.0, 100.25, 5, LIMIT)
    assert taken == 2 and left == pytest.approx(0.5)
    assert take_tokens(0, 100.0, 1000.0, 50, LIMIT) == (10, 0)  # never more than the burst


def test_clock_going_back_adds_nothing() -> None:
    assert take_tokens(1.5, 100.0, 50.0, 5, LIMIT) == (1, 0.5)


def test_want_zero_or_negative_takes_nothing() -> None:
    assert take_tokens(5, 0.0, 0.0, 0, LIMIT) == (0, 5)
    assert take_tokens(5, 0.0, 0.0, -3, LIMIT) == (0, 5)


limits = st.builds(lambda n, span: RateLimit.parse(f"{n}/{span}s"), st.integers(1, 10_000), st.integers(1, 3600))


@settings(max_examples=250, deadline=None)
@given(limit=limits, fill=st.floats(0, 1), updated=st.floats(0, 1e6), elapsed=st.floats(-10, 1e4),
       want=st.integers(-5, 100_000))
def test_never_takes_more_than_available(limit: RateLimit, fill: float, updated: float, elapsed: float,
                                         want: int) -> None:
    tokens = fill * limit.burst
    now = updated + elapsed
    available = min(limit.burst, tokens + max(0.0, now - updated) * limit.per_second)
    taken, left = take_tokens(tokens, updated, now, want, limit)
    assert isinstance(taken, int)
    assert 0 <= taken <= max(0, want)
    assert taken <= available + 1e-9
    assert taken == min(max(0, want), math.floor(available))  # and as much as it may
    assert left >= -1e-9 and left <= limit.burst + 1e-9
    assert taken + left == pytest.approx(available)


@settings(max_examples=100, deadline=None)
@given(limit=limits, steps=st.lists(st.tuples(st.floats(0, 5), st.integers(0, 1000)), min_size=1, max_size=40))
def test_total_over_time_is_bounded_by_rate(limit: RateLimit, steps: list[tuple[float, int]]) -> None:
    tokens, t, total = limit.burst, 0.0, 0
    for dt, want in steps:
        taken, tokens = take_tokens(tokens, t, t + dt, want, limit)
        t += dt
        total += taken
    assert total <= limit.burst + t * limit.per_second + 1e-6


@settings(max_examples=200, deadline=None)
@given(text=st.sampled_from(["20/s", "7/s", "100/s", "3/s", "600/min", "5/2s", "1000/s"]),
       claims=st.lists(st.tuples(st.floats(0.0, 0.3), st.integers(0, 500), st.floats(0.0, GUARD_SECONDS)),
                       min_size=1, max_size=200))
def test_never_more_than_the_count_in_any_window(text: str, claims: list[tuple[float, int, float]]) -> None:
    """Claims at any times, each item starting up to the guard after its claim: no window of the limit's
    span holds more starts than its count (the promise "20/s" makes: never 21 in a second)."""
    limit = RateLimit.parse(text)
    count = int(text.split("/")[0])
    span = {"s": 1.0, "min": 60.0, "2s": 2.0}[text.split("/")[1]]
    tokens, t, starts = limit.burst, 0.0, []
    for dt, want, lag in claims:
        taken, tokens = take_tokens(tokens, t, t + dt, want, limit)
        t += dt
        starts += [t + lag] * taken
    starts.sort()
    j = 0
    for i, s in enumerate(starts):
        while j < len(starts) and starts[j] < s + span:
            j += 1
        assert j - i <= count, f"{j - i} starts in {span}s from {s:.3f} under {text}"
