"""Upstream limits as pure arithmetic on one shared-state document per upstream key.

Every worker on the store reads and changes the document through ``Store.update_shared_state`` (one
transaction each), so the limits hold across workers and machines, and an adaptive cut made after one
worker's 429 slows every worker down.

* Pacing is GCRA (a token bucket written as a *theoretical arrival time*): a request reserves the next send
  time ``max(now, tat)`` and pushes ``tat`` one interval on. Sends come out evenly spaced at the allowed rate,
  whichever worker sends them, so an upstream that counts per second sees no burst above the rate.
  Tokens per minute are a second GCRA whose interval is the request's estimated tokens; the estimate is
  corrected from the response's ``usage``.
* Reservations reach at most ``HORIZON`` seconds ahead: a lane that would wait longer sleeps and asks again,
  so a rate cut is felt within that horizon instead of after every reservation already made at the old rate.
* Adaptation is AIMD: a 429 or 503 halves the rate (once per ``DECREASE_GAP``, however many in-flight
  requests come back refused) and holds every send until its ``Retry-After``; the rate then grows back by
  ``INCREASE_PER_S`` of the nominal rate per second. Without a configured rate the nominal rate is what was
  being sent when the upstream refused, and the limit is lifted once it is twice that again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HORIZON = 1.0            # seconds ahead a reservation may be made
TOLERANCE = 0.0          # seconds of burst allowed above the rate (0: strictly even spacing)
DECREASE = 0.5           # multiplicative decrease on a 429/503
DECREASE_GAP = 1.0       # at most one decrease per this many seconds (one episode, many refused requests)
INCREASE_PER_S = 0.05    # additive increase: this share of the nominal rate per second (half to full in 10 s)
MIN_FACTOR = 0.02        # the rate never drops below this share of nominal
MIN_RPS = 0.2            # nor below this many requests per second
EVENTS_KEPT = 20         # throttling events kept in the document, newest last


@dataclass(frozen=True)
class Nominal:
    """What the server was configured with (None: no limit of that kind)."""

    rpm: float | None = None
    tpm: float | None = None
    increase_per_s: float = INCREASE_PER_S

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm)


def fresh(nominal: Nominal) -> dict[str, Any]:
    return {"factor": 1.0, "learned_rps": None, "base_rps": None, "tat": 0.0, "tat_tokens": 0.0,
            "updated_at": None, "backoff_until": 0.0, "throttled_at": None, "throttles": 0, "events": [],
            "rpm": nominal.rpm, "tpm": nominal.tpm, "sent": 0}


def effective_rps(state: dict[str, Any]) -> float | None:
    """The request rate allowed now (None: no limit)."""
    if state.get("rpm"):
        return max(MIN_RPS, state["rpm"] / 60.0 * state["factor"])
    return state.get("learned_rps")


def effective_tps(state: dict[str, Any]) -> float | None:
    if state.get("tpm"):
        return max(1.0, state["tpm"] / 60.0 * state["factor"])
    return None


def unlimited(state: dict[str, Any] | None, now: float) -> bool:
    """Whether a request may go at once without reserving anything (no limit, no back-off in force)."""
    if state is None:
        return True
    return effective_rps(state) is None and effective_tps(state) is None and state.get("backoff_until", 0) <= now


def recover(state: dict[str, Any] | None, now: float, nominal: Nominal) -> dict[str, Any]:
    """The document brought up to ``now``: the configured limits (they may have changed) and the additive
    increase since it was last written."""
    s = dict(state) if state else fresh(nominal)
    s["rpm"], s["tpm"] = nominal.rpm, nominal.tpm
    last = s.get("updated_at")
    last = now if last is None else last
    dt = max(0.0, now - last)
    if dt and now >= s.get("backoff_until", 0):
        s["factor"] = min(1.0, s["factor"] + nominal.increase_per_s * dt)
        if s.get("learned_rps") is not None and s.get("base_rps"):
            s["learned_rps"] += s["base_rps"] * nominal.increase_per_s * dt
            if s["learned_rps"] >= 2 * s["base_rps"]:  # well past where it was refused: lift the limit
                s["learned_rps"] = s["base_rps"] = None
    s["updated_at"] = now
    return s


def reserve(state: dict[str, Any] | None, now: float, nominal: Nominal, tokens: float
            ) -> tuple[dict[str, Any], float, bool]:
    """Reserve one request of ``tokens`` estimated tokens: (new document, send time, reserved).

    When the next free send time is more than ``HORIZON`` ahead nothing is reserved and the time returned is
    when to ask again."""
    s = recover(state, now, nominal)
    rps, tps = effective_rps(s), effective_tps(s)
    at = max(now, s["backoff_until"])
    if rps:
        at = max(at, s["tat"] - TOLERANCE)
    if tps:
        at = max(at, s["tat_tokens"] - TOLERANCE)
    if at > now + HORIZON:
        return s, at - HORIZON, False
    if rps:
        s["tat"] = max(s["tat"], at) + 1.0 / rps
    if tps:
        s["tat_tokens"] = max(s["tat_tokens"], at) + max(1.0, tokens) / tps
    s["sent"] = s.get("sent", 0) + 1
    return s, at, True


def correct_tokens(state: dict[str, Any] | None, now: float, nominal: Nominal, estimated: float,
                   actual: float) -> dict[str, Any]:
    """The response's usage replaces the estimate the request was paced by."""
    s = recover(state, now, nominal)
    tps = effective_tps(s)
    if tps:
        s["tat_tokens"] = max(now - HORIZON, s["tat_tokens"] + (actual - estimated) / tps)
    return s


def throttled(state: dict[str, Any] | None, now: float, nominal: Nominal, status: int, retry_after: float | None,
              sending_rps: float | None) -> dict[str, Any]:
    """The upstream refused (429/503): hold every send until ``retry_after`` and cut the rate.

    ``sending_rps`` is the rate the reporting worker was sending at, the starting point when no rate is
    configured."""
    s = recover(state, now, nominal)
    wait = retry_after if retry_after is not None else 1.0
    s["backoff_until"] = max(s["backoff_until"], now + wait)
    s["throttles"] = s.get("throttles", 0) + 1
    last = s.get("throttled_at")
    decreased = last is None or now - last >= DECREASE_GAP
    if decreased:
        if nominal.limited:
            s["factor"] = max(MIN_FACTOR, s["factor"] * DECREASE)
        if not nominal.rpm:
            current = s.get("learned_rps") or sending_rps or 1.0
            s["base_rps"] = s.get("base_rps") or current
            s["learned_rps"] = max(MIN_RPS, current * DECREASE)
        s["throttled_at"] = now
    # Sends already paced past the back-off keep their places; the rest wait for it.
    s["tat"] = max(s["tat"], s["backoff_until"])
    s["tat_tokens"] = max(s["tat_tokens"], s["backoff_until"])
    s["updated_at"] = now
    events = list(s.get("events") or [])
    events.append({"at": now, "status": status, "retry_after": retry_after, "decreased": decreased,
                   "rps_after": effective_rps(s), "tpm_after": (effective_tps(s) or 0) * 60 or None})
    s["events"] = events[-EVENTS_KEPT:]
    return s


def describe(state: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """The document as a batch's status shows it."""
    if state is None:
        return {"requests_per_minute": None, "tokens_per_minute": None, "factor": 1.0, "backing_off": False,
                "throttles": 0, "events": []}
    rps, tps = effective_rps(state), effective_tps(state)
    return {"requests_per_minute": round(rps * 60, 3) if rps else None,
            "tokens_per_minute": round(tps * 60, 1) if tps else None,
            "configured_requests_per_minute": state.get("rpm"), "configured_tokens_per_minute": state.get("tpm"),
            "factor": round(state.get("factor", 1.0), 4), "backing_off": state.get("backoff_until", 0) > now,
            "backoff_until": state.get("backoff_until") or None, "throttled_at": state.get("throttled_at"),
            "throttles": state.get("throttles", 0), "sent_paced": state.get("sent", 0),
            "events": state.get("events", [])}
