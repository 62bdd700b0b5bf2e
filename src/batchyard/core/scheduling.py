"""Who gets which items: a pure plan computed inside a store's claim transaction.

Batches of higher priority are served first; batches of equal priority split a worker's capacity
evenly (the one that claimed longest ago breaks ties), so a small batch submitted after a huge one
starts at once. Slots are the unit of concurrency: a worker holds ``slots`` for a batch in the
store, and every worker counts the others' slots against each batch's ``parallel`` and each
processor's concurrency cap, so both limits hold across machines. Items are claimed ahead of
execution (a buffer sized to a fraction of a second of work) so claims and commits go in chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchyard.core import defaults


@dataclass(frozen=True)
class Runnable:
    pk: int
    processor: str
    priority: int
    parallel: int
    pending: int
    slots_others: int
    last_claim_at: float
    tenant: str = "default"


@dataclass(frozen=True)
class Held:
    """What a worker holds for one batch: granted slots, items buffered, items executing."""

    buffered: int = 0
    in_flight: int = 0
    avg_duration: float | None = None


@dataclass(frozen=True)
class Plan:
    grant: int
    claim: int


def grants(runnable: list[Runnable], capacity: int, proc_room: dict[str, int],
           held: dict[int, Held] | None = None, tenant_room: dict[str, int] | None = None) -> dict[int, int]:
    """Split ``capacity`` slots over batches: strict priority tiers, water-filling within a tier.

    A batch never gets more slots than it has work (pending items plus what this worker holds), a
    processor no more than its concurrency room, a tenant no more than its room under the tenant cap.
    """
    held = held or {}
    out: dict[int, int] = {r.pk: 0 for r in runnable}
    room = dict(proc_room)
    troom = dict(tenant_room or {})
    left = capacity
    tiers = sorted({r.priority for r in runnable}, reverse=True)
    for tier in tiers:
        members = sorted((r for r in runnable if r.priority == tier), key=lambda r: r.last_claim_at)
        caps = {}
        for r in members:
            h = held.get(r.pk, Held())
            caps[r.pk] = max(0, min(r.parallel - r.slots_others, r.pending + h.buffered + h.in_flight))
        active = [r for r in members if caps[r.pk] > 0]
        while left > 0 and active:
            share = max(1, left // len(active))
            progressed = False
            for r in list(active):
                if left <= 0:
                    break
                proc_left = room.get(r.processor, math.inf)
                give = int(min(share, caps[r.pk] - out[r.pk], proc_left, troom.get(r.tenant, math.inf), left))
                if give <= 0:
                    active.remove(r)
                    continue
                out[r.pk] += give
                left -= give
                if r.processor in room:
                    room[r.processor] -= give
                if r.tenant in troom:
                    troom[r.tenant] -= give
                progressed = True
                if out[r.pk] >= caps[r.pk]:
                    active.remove(r)
            if not progressed:
                break
    return out


def buffer_target(grant: int, avg_duration: float | None) -> int:
    """How many items to hold for a batch: the grant plus about BUFFER_SECONDS of work."""
    if grant <= 0:
        return 0
    # Unknown speed: one extra round; known speed: about BUFFER_SECONDS of work.
    ahead = grant if not avg_duration or avg_duration <= 0 else int(grant * defaults.BUFFER_SECONDS / avg_duration)
    return max(grant, min(defaults.MAX_CLAIM, grant + ahead))


def refill_at(grant: int, avg_duration: float | None) -> int:
    """Claim again once the items held (buffered + running) are down to this many: half the target.

    Claiming in chunks keeps transactions few; the worker and ``plan`` share this one threshold.
    """
    target = buffer_target(grant, avg_duration)
    return target - max(1, target // 2)


def plan(runnable: list[Runnable], held: dict[int, Held], capacity: int,
         proc_room: dict[str, int], tenant_room: dict[str, int] | None = None) -> dict[int, Plan]:
    g = grants(runnable, capacity, proc_room, held, tenant_room)
    out = {}
    for r in runnable:
        h = held.get(r.pk, Held())
        want = buffer_target(g[r.pk], h.avg_duration) - h.buffered - h.in_flight
        if h.buffered and h.buffered + h.in_flight > refill_at(g[r.pk], h.avg_duration):
            want = 0  # enough in hand: a claim is not worth its transaction yet
        out[r.pk] = Plan(grant=g[r.pk], claim=max(0, min(want, r.pending)))
    return out
