"""Retry as a pure decision: (error, attempt, policy) -> retry at T, or give up."""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: delay = uniform(0, min(max_delay, base * factor**(n-1)))."""

    max_attempts: int = 3
    base_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("delays must be >= 0 and factor >= 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before the attempt that follows attempt number ``attempt`` (1-based)."""
        n = max(0, attempt - 1)
        # factor ** n overflows a float long before it matters: past max_delay it is max_delay.
        if self.base_delay <= 0:
            ceiling = 0.0
        elif self.factor <= 1 or n * math.log(self.factor) < math.log(self.max_delay / self.base_delay + 1e-300):
            ceiling = min(self.max_delay, self.base_delay * self.factor ** n)
        else:
            ceiling = self.max_delay
        if not self.jitter:
            return ceiling
        # Never less than a tenth of the ceiling, so a retry storm still spreads out.
        return (rng or random).uniform(ceiling * 0.1, ceiling)


@dataclass(frozen=True)
class Retry:
    at: float


@dataclass(frozen=True)
class GiveUp:
    reason: str


def decide(
    attempt: int, policy: RetryPolicy, now: float, *, permanent: bool = False,
    rng: random.Random | None = None, retry_after: float | None = None,
) -> Retry | GiveUp:
    """After attempt number ``attempt`` failed: retry at a time, or give up.

    ``retry_after`` (seconds, from the processor's ``RetryAfter``) replaces the backoff delay: the service that
    refused said when to come back, and backing off less would be refused again, more would waste time."""
    if permanent:
        return GiveUp("permanent error")
    if attempt >= policy.max_attempts:
        return GiveUp(f"gave up after {attempt} attempt{'s' if attempt != 1 else ''}")
    if retry_after is not None:
        return Retry(now + max(0.0, retry_after))
    return Retry(now + policy.delay(attempt, rng))


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110), never
    negative; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
