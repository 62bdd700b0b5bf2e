"""Rate limits: parsing "20/s" and the token-bucket arithmetic the stores apply inside a claim.

A limit is a ceiling over any window of its span: "20/s" never starts more than 20 items in any one second,
across every worker, counting by when items start (a few ms after their claim). A token bucket lets at most
``burst + rate * L`` items start in any L seconds, so the bucket is small and its rate a little under the
limit: "20/s" runs at about 18 a second, "600/min" at about 598.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*([a-z]+)\s*$")
GUARD_SECONDS = 0.05  # an item starts up to this long after its claim: the window is counted this much wider


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst: float
    text: str

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``"20/s"``, ``"600/min"``, ``"1000/h"`` or ``"5/10s"``."""
        m = _RATE.match(text.lower())
        if not m or m.group(3) not in _UNITS:
            raise ValueError(f"rate limit {text!r}: expected COUNT/UNIT such as '20/s' or '600/min'")
        count = float(m.group(1))
        span = float(m.group(2) or 1) * _UNITS[m.group(3)]
        if count <= 0 or span <= 0:
            raise ValueError(f"rate limit {text!r}: count and period must be positive")
        nominal = count / span
        # Whole starts per window: the count's whole part (at least one), per the span that rate gives it.
        n = max(1, math.floor(count))
        window = n / nominal
        # The bucket holds what a claim every 0.1 s takes, at least 2 (a single token is wasted whenever a
        # claim comes late), but 1 for limits of a few a second, whose tokens come far apart anyway.
        burst = min(float(n), 1.0 if nominal <= 5 else max(2.0, nominal * 0.1))
        # Then burst + rate * (window + guard) stays under n + 1: at most n whole starts in any window.
        rate = (n + 0.999 - burst) / (window + GUARD_SECONDS)
        return cls(per_second=rate, burst=burst, text=text)


def level(tokens: float, updated_at: float, now: float, limit: RateLimit) -> float:
    """Tokens in the bucket at ``now``."""
    return min(limit.burst, tokens + max(0.0, now - updated_at) * limit.per_second)


def take_tokens(tokens: float, updated_at: float, now: float, want: int, limit: RateLimit) -> tuple[int, float]:
    """Refill the bucket up to ``now`` and take up to ``want`` whole tokens: (taken, tokens left)."""
    have = level(tokens, updated_at, now, limit)
    taken = max(0, min(want, int(have)))
    return taken, have - taken
