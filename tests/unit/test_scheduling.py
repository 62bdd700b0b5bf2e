"""Who gets which items: grants, buffer targets and claim plans."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from batchyard.core import defaults
from batchyard.core.scheduling import Held, Plan, Runnable, buffer_target, grants, plan


def rb(pk: int, *, processor: str = "p", priority: int = 1, parallel: int = 8, pending: int = 1000,
       slots_others: int = 0, last_claim_at: float = 0.0) -> Runnable:
    return Runnable(pk=pk, processor=processor, priority=priority, parallel=parallel, pending=pending,
                    slots_others=slots_others, last_claim_at=last_claim_at)


def test_nothing_to_share() -> None:
    assert grants([], 8, {}) == {}
    assert grants([rb(1), rb(2)], 0, {}) == {1: 0, 2: 0}


def test_priority_tiers_are_strict() -> None:
    g = grants([rb(1, priority=1), rb(2, priority=2), rb(3, priority=0)], 8, {})
    assert g == {1: 0, 2: 8, 3: 0}
    g = grants([rb(1, priority=1), rb(2, priority=2, parallel=5), rb(3, priority=0)], 8, {})
    assert g == {1: 3, 2: 5, 3: 0}
    g = grants([rb(1, priority=1, parallel=2), rb(2, priority=2, parallel=5), rb(3, priority=0)], 8, {})
    assert g == {1: 2, 2: 5, 3: 1}


def test_equal_priority_water_fills() -> None:
    assert grants([rb(1), rb(2)], 8, {}) == {1: 4, 2: 4}
    assert grants([rb(1), rb(2), rb(3)], 8, {}) == {1: 3, 2: 3, 3: 2}
    # a small batch takes what it can use; the others share the rest
    assert grants([rb(1, parallel=1), rb(2), rb(3)], 9, {}) == {1: 1, 2: 4, 3: 4}
    assert grants([rb(1, parallel=2), rb(2, parallel=100)], 50, {}) == {1: 2, 2: 48}


def test_the_batch_that_waited_longest_gets_the_odd_slot() -> None:
    g = grants([rb(1, last_claim_at=50.0), rb(2, last_claim_at=10.0), rb(3, last_claim_at=30.0)], 4, {})
    assert g == {1: 1, 2: 2, 3: 1}


def test_caps_count_other_workers_slots() -> None:
    assert grants([rb(1, parallel=8, slots_others=6)], 8, {}) == {1: 2}
    assert grants([rb(1, parallel=8, slots_others=8)], 8, {}) == {1: 0}
    assert grants([rb(1, parallel=8, slots_others=12)], 8, {}) == {1: 0}


def test_processor_room_caps_all_batches_of_a_processor() -> None:
    runnable = [rb(1, processor="api"), rb(2, processor="api"), rb(3, processor="local")]
    g = grants(runnable, 12, {"api": 3})
    assert g[1] + g[2] == 3 and g[3] == 8
    assert grants(runnable, 12, {"api": 0, "local": 1}) == {1: 0, 2: 0, 3: 1}
    assert grants(runnable, 12, {}) == {1: 4, 2: 4, 3: 4}  # no entry: no processor cap


def test_room_left_by_a_capped_processor_goes_to_the_next_tier() -> None:
    runnable = [rb(1, processor="api", priority=2), rb(2, processor="local", priority=1)]
    assert grants(runnable, 8, {"api": 2}) == {1: 2, 2: 6}


def test_buffer_target() -> None:
    assert buffer_target(0, None) == 0
    assert buffer_target(0, 0.001) == 0
    assert buffer_target(4, None) == 8  # unknown speed: one extra round
    assert buffer_target(4, 0.0) == 8
    assert buffer_target(4, 0.1) == 4 + int(4 * defaults.BUFFER_SECONDS / 0.1)
    assert buffer_target(4, 100.0) == 4  # slow items: no more than the grant
    assert buffer_target(100, 1e-6) == defaults.MAX_CLAIM
    assert buffer_target(defaults.MAX_CLAIM * 2, 1.0) == defaults.MAX_CLAIM * 2  # never below the grant


@settings(max_examples=300, deadline=None)
@given(grant=st.integers(0, 10_000), avg=st.one_of(st.none(), st.just(0.0), st.floats(1e-7, 1000)))
def test_buffer_target_bounds(grant: int, avg: float | None) -> None:
    t = buffer_target(grant, avg)
    if grant == 0:
        assert t == 0
    else:
        assert grant <= t <= max(grant, defaults.MAX_CLAIM)


def test_plan_claims_no_more_than_pending() -> None:
    p = plan([rb(1, pending=3)], {}, 8, {})
    assert p == {1: Plan(grant=3, claim=3)}  # no more slots than work


def test_plan_counts_what_the_worker_holds() -> None:
    r = [rb(1, parallel=4)]
    assert plan(r, {}, 4, {})[1] == Plan(grant=4, claim=8)
    # 6 of 8 held: not worth a claim transaction yet
    assert plan(r, {1: Held(buffered=2, in_flight=4)}, 4, {})[1].claim == 0
    # the buffer ran dry while 4 run: top up to the target
    assert plan(r, {1: Held(buffered=0, in_flight=4)}, 4, {})[1].claim == 4
    # below half the target with something still buffered: refill
    assert plan(r, {1: Held(buffered=1, in_flight=2)}, 4, {})[1].claim == 5


def test_plan_without_grant_claims_nothing() -> None:
    p = plan([rb(1, priority=2), rb(2, priority=1)], {2: Held(buffered=3)}, 8, {})
    assert p[2] == Plan(grant=0, claim=0)


def test_grants_follow_demand() -> None:
    p = plan([rb(1, priority=2, pending=1), rb(2, priority=1, pending=100)], {}, 8, {})
    assert p[1].grant <= 1
    assert p[2].grant >= 7 and p[2].claim >= 7


runnables = st.lists(
    st.builds(Runnable, pk=st.just(0), processor=st.sampled_from(["a", "b", "c"]), priority=st.integers(0, 2),
              parallel=st.integers(1, 40), pending=st.integers(0, 500), slots_others=st.integers(0, 50),
              last_claim_at=st.floats(0, 100)),
    max_size=8,
).map(lambda rs: [Runnable(i, r.processor, r.priority, r.parallel, r.pending, r.slots_others, r.last_claim_at)
                  for i, r in enumerate(rs)])
rooms = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 30), max_size=3)


@settings(max_examples=200, deadline=None)
@given(runnable=runnables, capacity=st.integers(0, 100), proc_room=rooms)
def test_grants_properties(runnable: list[Runnable], capacity: int, proc_room: dict[str, int]) -> None:
    g = grants(runnable, capacity, proc_room)
    assert set(g) == {r.pk for r in runnable}
    assert all(v >= 0 for v in g.values())
    assert sum(g.values()) <= capacity
    # never more slots than the batch may use, nor than it has work for
    cap = {r.pk: max(0, min(r.parallel - r.slots_others, r.pending)) for r in runnable}
    assert all(g[r.pk] <= cap[r.pk] for r in runnable)
    for name, room in proc_room.items():
        assert sum(g[r.pk] for r in runnable if r.processor == name) <= room

    def saturated(r: Runnable) -> bool:
        used = sum(g[x.pk] for x in runnable if x.processor == r.processor)
        return g[r.pk] == cap[r.pk] or (r.processor in proc_room and used >= proc_room[r.processor])

    # work-conserving: capacity left over means nobody could take more
    if sum(g.values()) < capacity:
        assert all(saturated(r) for r in runnable)
    # strict priority: a lower tier gets slots only when every higher tier is saturated
    for low in runnable:
        if g[low.pk] > 0:
            assert all(saturated(h) for h in runnable if h.priority > low.priority)


@settings(max_examples=150, deadline=None)
@given(runnable=runnables, capacity=st.integers(0, 100))
def test_equal_priority_shares_evenly(runnable: list[Runnable], capacity: int) -> None:
    g = grants(runnable, capacity, {})
    for tier in {r.priority for r in runnable}:
        hungry = [g[r.pk] for r in runnable
                  if r.priority == tier and g[r.pk] < max(0, min(r.parallel - r.slots_others, r.pending))]
        if hungry:  # while some batch could take more, no batch of its tier has more than one slot extra
            assert all(g[r.pk] <= min(hungry) + 1 for r in runnable if r.priority == tier)


@settings(max_examples=100, deadline=None)
@given(runnable=runnables, capacity=st.integers(0, 100), proc_room=rooms,
       held=st.dictionaries(st.integers(0, 7), st.builds(Held, buffered=st.integers(0, 50),
                                                         in_flight=st.integers(0, 50),
                                                         avg_duration=st.one_of(st.none(), st.floats(1e-7, 10)))))
def test_plan_properties(runnable: list[Runnable], capacity: int, proc_room: dict[str, int],
                         held: dict[int, Held]) -> None:
    p = plan(runnable, held, capacity, proc_room)
    g = grants(runnable, capacity, proc_room, held)
    for r in runnable:
        assert p[r.pk].grant == g[r.pk]
        assert 0 <= p[r.pk].claim <= r.pending
        assert p[r.pk].claim <= buffer_target(g[r.pk], held.get(r.pk, Held()).avg_duration)
        if g[r.pk] == 0:
            assert p[r.pk].claim == 0
