"""Rate limits: parsing "20/s" and the token-bucket arithmetic the stores apply inside a claim."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*([a-z]+)\s*$")


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
        per_second = count / span
        # At most one second's worth at once (and at least one item), so starts stay evenly spread.
        return cls(per_second=per_second, burst=max(1.0, per_second), text=text)


def level(tokens: float, updated_at: float, now: float, limit: RateLimit) -> float:
    """Tokens in the bucket at ``now``."""
    return min(limit.burst, tokens + max(0.0, now - updated_at) * limit.per_second)


def take_tokens(tokens: float, updated_at: float, now: float, want: int, limit: RateLimit) -> tuple[int, float]:
    """Refill the bucket up to ``now`` and take up to ``want`` whole tokens: (taken, tokens left)."""
    have = level(tokens, updated_at, now, limit)
    taken = max(0, min(want, int(have)))
    return taken, have - taken
