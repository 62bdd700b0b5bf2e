"""Retry as a pure decision: backoff bounds, jitter range, give-up rules."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchyard.core.retry import GiveUp, Retry, RetryPolicy, decide

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 50),
    base_delay=st.floats(0, 10, allow_nan=False),
    factor=st.floats(1, 4, allow_nan=False),
    max_delay=st.floats(0, 120, allow_nan=False),
    jitter=st.booleans(),
)


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"base_delay": -1}, {"max_delay": -0.1}, {"factor": 0.5},
])
def test_invalid_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_defaults() -> None:
    p = RetryPolicy()
    assert (p.max_attempts, p.base_delay, p.factor, p.max_delay, p.jitter) == (3, 0.5, 2.0, 60.0, True)


def test_exponential_without_jitter() -> None:
    p = RetryPolicy(max_attempts=20, base_delay=0.5, factor=2, max_delay=10, jitter=False)
    assert [p.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert p.delay(0) == 0.5  # attempt numbers below 1 are treated as the first


def test_jitter_spreads_between_a_tenth_and_the_ceiling() -> None:
    p = RetryPolicy(base_delay=1, factor=2, max_delay=100)
    rng = random.Random(7)
    ds = [p.delay(3, rng) for _ in range(2000)]
    assert min(ds) >= 0.4 and max(ds) <= 4.0
    assert min(ds) < 0.6 and max(ds) > 3.8  # the whole range is used
    assert len(set(ds)) > 1900


@settings(max_examples=200, deadline=None)
@given(policy=policies, attempt=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_delay_is_bounded(policy: RetryPolicy, attempt: int, seed: int) -> None:
    ceiling = min(policy.max_delay, policy.base_delay * policy.factor ** (attempt - 1))
    d = policy.delay(attempt, random.Random(seed))
    assert 0 <= d <= policy.max_delay
    assert d <= ceiling * (1 + 1e-9) + 1e-12
    if policy.jitter:
        assert d >= ceiling * 0.1 * (1 - 1e-9) - 1e-12
    else:
        assert d == ceiling


@settings(max_examples=200, deadline=None)
@given(policy=policies, attempt=st.integers(1, 200), now=st.floats(0, 2e9), permanent=st.booleans())
def test_decide(policy: RetryPolicy, attempt: int, now: float, permanent: bool) -> None:
    d = decide(attempt, policy, now, permanent=permanent, rng=random.Random(attempt))
    if permanent:
        assert d == GiveUp("permanent error")
    elif attempt >= policy.max_attempts:
        assert isinstance(d, GiveUp) and str(attempt) in d.reason
    else:
        assert isinstance(d, Retry)
        assert now <= d.at <= now + policy.max_delay + 1e-6


def test_decide_wording() -> None:
    p = RetryPolicy(max_attempts=3, base_delay=1, jitter=False)
    assert decide(1, p, 100.0) == Retry(101.0)
    assert decide(2, p, 100.0) == Retry(102.0)
    assert decide(3, p, 100.0) == GiveUp("gave up after 3 attempts")
    assert decide(1, RetryPolicy(max_attempts=1), 0.0) == GiveUp("gave up after 1 attempt")
    assert decide(1, p, 0.0, permanent=True) == GiveUp("permanent error")


def test_delay_with_many_attempts_stays_capped() -> None:
    p = RetryPolicy(max_attempts=100_000, base_delay=0.5, max_delay=60)
    assert p.delay(2000) <= 60
    assert isinstance(decide(2000, p, 0.0), Retry)
