"""Rate limits: parsing and the token bucket."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchyard.core.limits import RateLimit, take_tokens


@pytest.mark.parametrize(("text", "per_second", "burst"), [
    ("20/s", 20.0, 20.0),
    ("600/min", 10.0, 10.0),
    ("1000/h", 1000 / 3600, 1.0),
    ("5/10s", 0.5, 1.0),
    ("3/2m", 3 / 120, 1.0),
    ("1/day", 1 / 86400, 1.0),
    ("2.5/s", 2.5, 2.5),
    ("100/second", 100.0, 100.0),
    ("90/minute", 1.5, 1.5),
    ("7/hour", 7 / 3600, 1.0),
    ("  20 / S ", 20.0, 20.0),
    ("60/Min", 1.0, 1.0),
])
def test_parse_good(text: str, per_second: float, burst: float) -> None:
    r = RateLimit.parse(text)
    assert r.per_second == pytest.approx(per_second)
    assert r.burst == pytest.approx(burst)
    assert r.text == text


@pytest.mark.parametrize("text", [
    "", "abc", "20", "/s", "20/", "0/s", "0.0/min", "-1/s", "20/fortnight", "20/s/s", "1e3/s", "twenty/s",
    "20 per second", "s/20",
    pytest.param("5/0s"),
])
def test_parse_bad(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit.parse(text)


LIMIT = RateLimit.parse("10/s")


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
