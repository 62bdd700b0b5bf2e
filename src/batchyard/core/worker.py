"""The worker: claim items in chunks, run them in lanes, record outcomes in group commits.

One *pump* thread talks to the store (claims, group commits, heartbeats, reaping, pause/cancel
checks); no SQL runs anywhere else. Each batch the worker holds has a runner whose *lanes* (threads,
coroutines on one event loop, or threads each driving a child process) take items from the runner's
buffer and append outcomes to one queue the pump drains. Lanes never block on the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from batchyard.core import defaults, failpoints, resources
from batchyard.core.errors import PermanentError, StoreUnavailable
from batchyard.core.execute import (
    Attempt,
    ChildProcess,
    ainvoke,
    default_cost_of,
    failed_attempt,
    invoke,
    shape_result,
    timed_out,
    to_outcome,
)
from batchyard.core.execute import log as item_log
from batchyard.core.processor import Context, Item, Processor
from batchyard.core.resources import ResourceUnavailable
from batchyard.core.scheduling import Held, refill_at
from batchyard.core.states import FINAL_BATCH, BatchStatus
from batchyard.core.store import OK, BatchRuntime, Claimed, Outcome, Store
from batchyard.core.throttle import Throttle

log = logging.getLogger("batchyard.worker")


class Runner:
    """The items a worker holds for one batch, and the lanes that run them."""

    def __init__(self, worker: Worker, rt: BatchRuntime, proc: Processor) -> None:
        self.worker = worker
        self.rt = rt
        self.proc = proc
        self.policy = dataclasses.replace(proc.retry, max_attempts=rt.max_attempts)
        self.buffer: deque[Claimed] = deque()
        self.grant = 0
        self.low_water = 0  # claim again once buffered + running items are down to this
        self.dry_until = 0.0  # the batch had nothing left to claim: do not ask again before this
        self.closed = False
        self.avg: float | None = None
        # lane index -> (claimed item, start time, token); a lane whose token changed was abandoned
        self.current: dict[int, tuple[Claimed, float, object]] = {}
        self.lanes: dict[int, object] = {}
        self.has_work = threading.Event()
        self._lock = threading.Lock()
        # A processor's shared resource is obtained (from the store, or set up) before any lane starts.
        self.resource_ready = proc.resource is None
        self._obtaining = False
        self._setup_delay = 0.0  # after a failed setup: wait this long before the next (doubling)
        self._setup_after = 0.0

    @property
    def in_flight(self) -> int:
        return len(self.current)

    def held(self) -> Held:
        return Held(buffered=len(self.buffer), in_flight=self.in_flight, avg_duration=self.avg)

    @property
    def hungry(self) -> bool:
        return self.grant > 0 and len(self.buffer) + len(self.current) <= self.low_water

    def add(self, items: list[Claimed]) -> None:
        self.buffer.extend(items)
        self.has_work.set()
        self.worker.loop_wake(self)

    @property
    def lanes_wanted(self) -> int:
        """Lanes to run: the grant, except for items so quick that they can only be CPU work.

        Threads cannot run Python in parallel, so for items that take microseconds more lanes
        only add lock hand-offs; ``parallel`` is a cap, and one lane is the fastest way to honour it.
        """
        if self.avg is not None and self.avg < defaults.INSTANT_ITEM_SECONDS and self.proc.mode == "thread":
            return min(self.grant, 1)
        return self.grant

    def set_grant(self, grant: int) -> None:
        self.grant = grant
        self.low_water = refill_at(grant, self.avg)
        if not self.resource_ready:
            self._obtain_resource()
            return
        self._spawn_lanes()

    def _spawn_lanes(self) -> None:
        with self._lock:
            for idx in range(self.lanes_wanted):
                if idx not in self.lanes:
                    self._spawn(idx)
        self.has_work.set()
        self.worker.loop_wake(self)

    def _obtain_resource(self) -> None:
        """Get the batch's shared resource on a thread of its own (a setup may take minutes: buying a stamp and
        waiting for it to become usable), then start the lanes. Its few store calls are the one exception to
        "only the pump talks to the store": once per batch and worker, never per item."""
        with self._lock:
            if self._obtaining or self.closed or self.grant <= 0 or time.monotonic() < self._setup_after:
                return
            self._obtaining = True
        threading.Thread(target=self._obtain, daemon=True, name=f"batchyard-resource-{self.rt.batch_id}").start()

    def _obtain(self) -> None:
        resource, worker = self.proc.resource, self.worker
        assert resource is not None and worker.worker_pk is not None
        try:
            state = resources.obtain(worker.store, resource, self.rt.pk, self.rt.batch_id, worker.worker_pk,
                                     self.rt.params, stop=lambda: self.closed or worker.stopping)
        except Exception as exc:
            log.warning("batch %s: resource %s could not be set up: %s", self.rt.batch_id,
                        type(resource).__name__, exc)
            self._setup_failed(exc)
            return
        finally:
            self._obtaining = False
        if state is None:
            return  # closed or stopping meanwhile
        self.rt = dataclasses.replace(self.rt, resource=state)
        self._setup_delay = 0.0
        self.resource_ready = True
        self._spawn_lanes()

    def _setup_failed(self, exc: Exception) -> None:
        """The items held fail with the setup's error (retried by their policy, a PermanentError at once);
        the next claim tries the setup again, after a pause that doubles up to a minute."""
        why = f"the batch's resource ({type(self.proc.resource).__name__}) could not be set up: " \
              f"{type(exc).__name__}: {exc}"
        err: Exception = PermanentError(why) if isinstance(exc, PermanentError) else ResourceUnavailable(why)
        for c in self.take_buffer():
            self.worker.outcomes.append(to_outcome(failed_attempt(err, None, c[4], time.time()), c, self.rt,
                                                   self.policy))
        self._setup_delay = min(60.0, max(1.0, self._setup_delay * 2))
        self._setup_after = time.monotonic() + self._setup_delay
        self.worker.poke()

    def _spawn(self, idx: int) -> None:
        """Start lane ``idx`` (caller holds the lock); the token is set before the lane can look at it."""
        token = object()
        self.lanes[idx] = token
        if self.proc.mode == "async":
            self.worker.async_loop().call_soon_threadsafe(
                lambda: self.worker.async_loop().create_task(self._async_lane(idx, token)))
        else:
            fast = self.proc.mode == "thread" and not self.proc.timeout
            threading.Thread(target=self._fast_lane if fast else self._thread_lane, args=(idx, token),
                             daemon=True, name=f"batchyard-lane-{self.rt.batch_id}-{idx}").start()

    def _stopping(self, idx: int, token: object) -> bool:
        """Whether lane ``idx`` should stop (closed, beyond the lanes wanted, or replaced); unregisters it."""
        if not (self.closed or idx >= self.lanes_wanted or self.lanes.get(idx) is not token):
            return False
        with self._lock:
            if self.lanes.get(idx) is token:
                del self.lanes[idx]
        return True

    def _next(self, idx: int, token: object) -> Claimed | None:
        """The lane's next item; None when the lane should stop."""
        while True:
            if self._stopping(idx, token):
                return None
            try:
                c = self.buffer.popleft()
            except IndexError:
                self.worker.poke()
                self.has_work.clear()
                if not self.buffer:
                    self.has_work.wait(0.1)
                continue
            if len(self.buffer) + len(self.current) <= self.low_water:
                self.worker.poke()
            return c

    def _done(self, idx: int, token: object, c: Claimed, a: Attempt) -> None:
        if failpoints.ARMED:
            failpoints.hit("after_processor")
        cur = self.current.get(idx)
        if cur is None or cur[2] is not token:
            return  # abandoned after a timeout: the pump already recorded this item
        if a.used:
            self.worker.usage.append((self.rt.pk, a.used))
        d = a.finished - a.started
        self.avg = d if self.avg is None else self.avg * 0.9 + d * 0.1
        self.worker.outcomes.append(to_outcome(a, c, self.rt, self.policy))
        del self.current[idx]

    def _thread_lane(self, idx: int, token: object) -> None:
        process = self.proc.mode == "process"
        child: ChildProcess | None = None
        try:
            while (c := self._next(idx, token)) is not None:
                started = time.time()
                self.current[idx] = (c, started, token)
                if process and (child is None or not child.alive):
                    try:
                        child = ChildProcess(self.worker.sources)
                    except Exception as exc:  # retried like any failure; a broken file fails every item
                        child = None
                        self._done(idx, token, c, failed_attempt(exc, None, c[4], started))
                        continue
                a = child.run(self.proc, self.rt, c) if child else invoke(self.proc, self.rt, c)
                self._done(idx, token, c, a)
                if len(self.worker.outcomes) >= defaults.FLUSH_ITEMS:
                    self.worker.poke()
        finally:
            if child:
                child.close()

    def _fast_lane(self, idx: int, token: object) -> None:
        """``_thread_lane`` for thread processors without a timeout, with the per-item work inlined.

        This loop is most of batchyard's per-item cost for fast processors: no calls it can avoid,
        names bound to locals, the common (successful) outcome built right here.
        """
        rt, proc, policy = self.rt, self.proc, self.policy
        fn, pk, batch_id, params = proc.fn, rt.pk, rt.batch_id, rt.params
        default_cost = rt.cost_per_item or proc.cost_per_item or None
        # A cost model prices each item that reports no cost of its own (fixed costs need no call).
        cost_model = proc.cost_model is not None and not rt.cost_per_item
        current, outcomes = self.current, self.worker.outcomes
        append, usage = outcomes.append, self.worker.usage
        clock = time.time_ns
        fail_after = failpoints.armed("after_processor")
        while (c := self._next(idx, token)) is not None:
            started = clock() // 1000  # integer microseconds, as outcomes carry them
            current[idx] = (c, started / 1e6, token)
            rowid, seq, key, payload, attempts = c
            item_id = key if key is not None else str(seq)
            ctx = Context(batch_id, item_id, attempts, item_log, rt.resource)
            item = Item(item_id, seq, payload, attempts, params, proc)
            try:
                value = fn(item, ctx)
            except Exception as exc:
                append(to_outcome(failed_attempt(exc, ctx, attempts, started / 1e6), c, rt, policy))
            else:
                if not isinstance(value, dict):
                    value = shape_result(value)
                finished = clock() // 1000
                append((pk, rowid, OK, value, None, started, finished, ctx.cost if ctx.cost is not None else
                        default_cost_of(proc, rt, item) if cost_model else default_cost, None))
                d = (finished - started) / 1e6
                self.avg = d if self.avg is None else self.avg * 0.9 + d * 0.1
            if ctx.used:
                usage.append((pk, ctx.used))
            if fail_after:  # the outcome is only in memory yet: crashing here loses it, as in _done
                failpoints.hit("after_processor")
            del current[idx]
            if len(outcomes) >= defaults.FLUSH_ITEMS:
                self.worker.poke()

    async def _async_lane(self, idx: int, token: object) -> None:
        while True:
            if self._stopping(idx, token):
                return
            try:
                c = self.buffer.popleft()
            except IndexError:
                self.worker.wake.set()
                await self.worker.async_event(self).wait()
                self.worker.async_event(self).clear()
                continue
            if len(self.buffer) + len(self.current) <= self.low_water:
                self.worker.poke()
            self.current[idx] = (c, time.time(), token)
            self._done(idx, token, c, await ainvoke(self.proc, self.rt, c))

    def check_timeouts(self, now: float) -> None:
        """Thread lanes cannot be interrupted: record a timeout and replace the stuck lane."""
        t = self.proc.timeout
        if not t or self.proc.mode != "thread":
            return
        for idx, (c, started, token) in list(self.current.items()):
            if now - started > t and self.current.get(idx, (None, None, None))[2] is token:
                del self.current[idx]
                self.worker.outcomes.append(to_outcome(timed_out(self.proc, c, started), c, self.rt, self.policy))
                with self._lock:
                    if self.lanes.get(idx) is token and not self.closed:
                        self._spawn(idx)

    def take_buffer(self) -> list[Claimed]:
        out = []
        while True:
            try:
                out.append(self.buffer.popleft())
            except IndexError:
                return out

    def close(self) -> None:
        self.closed = True
        self.has_work.set()
        self.worker.loop_wake(self)


class Worker:
    """Runs items of every runnable batch whose processor it has, until stopped."""

    def __init__(self, store: Store, processors: list[Processor], *, concurrency: int = defaults.PARALLEL,
                 name: str | None = None, lease_seconds: float = defaults.LEASE_SECONDS,
                 sources: list[str] | None = None, on_cycle: Callable[[Worker], None] | None = None,
                 only: set[str] | None = None, tenant_cap: int | None = None,
                 throttle: Throttle | None = None) -> None:
        self.store = store
        self.processors = {p.name: p for p in processors}
        self.concurrency = concurrency
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.lease_seconds = lease_seconds
        self.sources = list(sources or [])
        self.on_cycle = on_cycle
        self.only = only  # restrict to these batch ids (``batchyard run`` runs its own batch only)
        self.tenant_cap = tenant_cap  # the most items one tenant may have running, across all workers
        # Memory, disk and CPU thresholds: past one, claim nothing (see core.throttle); why, while it lasts.
        self.throttle = throttle
        self.throttled: str | None = None
        self._noted: str | None = None  # the note last written on the batches served
        self._note_at = 0.0
        self.runners: dict[int, Runner] = {}
        self.outcomes: deque[Outcome] = deque()
        self.usage: deque[tuple[int, float]] = deque()  # (batch pk, amount) of shared resources used by items
        # Processors with a shared resource: the pump tears down those of batches that ended.
        self._with_resource = sorted(name for name, p in self.processors.items() if p.resource is not None)
        self._teardowns: list[threading.Thread] = []
        self.wake = threading.Event()
        self.stopping = False
        self.worker_pk: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[int, asyncio.Event] = {}
        self._failed: BaseException | None = None
        self.recorded = 0
        self._flushed = 0  # outcomes handed to the store so far (accepted or refused)
        # An item lost with its worker past its max_attempts, waiting to run alone (see _alone), and the
        # value of _flushed when it was started (None: not yet).
        self._suspect: tuple[Runner, Claimed] | None = None
        self._suspect_mark: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.store.reap(self.lease_seconds)
        self.worker_pk = self.store.register_worker(self.name, sorted(self.processors), self.concurrency)
        self._thread = threading.Thread(target=self._pump_safe, name="batchyard-pump", daemon=True)
        self._thread.start()

    def stop(self, grace: float = defaults.GRACE_SECONDS) -> None:
        """Stop claiming, release buffered items, give in-flight items ``grace`` seconds, release the rest."""
        self.begin_stop(grace)
        if self._thread:
            self._thread.join()
        if self._failed:
            raise self._failed

    def begin_stop(self, grace: float = defaults.GRACE_SECONDS) -> None:
        """``stop`` without waiting for it: safe in a signal handler, so that claims stop at the signal.

        A later call (the ``stop`` that waits) may shorten the grace period, never extend it.
        """
        deadline = time.monotonic() + grace
        self._grace_deadline = min(deadline, getattr(self, "_grace_deadline", deadline))
        self.stopping = True
        self.wake.set()

    def stop_now(self) -> None:
        self.stop(grace=0)

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    # -- helpers for runners -------------------------------------------------------------------

    def async_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="batchyard-async", daemon=True).start()
            self._loop = loop
        return self._loop

    def async_event(self, runner: Runner) -> asyncio.Event:
        ev = self._events.get(runner.rt.pk)
        if ev is None:
            ev = self._events[runner.rt.pk] = asyncio.Event()
        return ev

    def loop_wake(self, runner: Runner) -> None:
        if runner.proc.mode == "async" and self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self.async_event(runner).set())

    def poke(self) -> None:
        """Wake the pump (cheap when it is already awake)."""
        if not self.wake.is_set():
            self.wake.set()

    # -- the pump ------------------------------------------------------------------------------

    def _pump_safe(self) -> None:
        delay = 0.0
        while True:
            began = time.monotonic()
            try:
                self._pump()
                return
            except StoreUnavailable as exc:
                if time.monotonic() - began > 4 * defaults.STORE_RETRY_MAX_SECONDS:
                    delay = 0.0  # the store was back for a while: a new outage, not more of the last one
                # A full disk, a database restarting: the items stay leased to this worker and their outcomes
                # in memory (see _flush), so wait and carry on rather than die and have them all run again.
                # If it lasts past the lease, other workers take the items over and these outcomes are refused.
                delay = min(defaults.STORE_RETRY_MAX_SECONDS, max(0.25, delay * 2))
                log.warning("store unavailable, trying again in %.1fs: %s", delay, exc)
                self.wake.wait(delay)
                self.wake.clear()
            except BaseException as exc:  # surfaced by stop(); the process must not hang on a dead pump
                log.exception("worker pump failed")
                self._failed = exc
                self.stopping = True
                for r in self.runners.values():
                    r.close()
                return

    def _pump(self) -> None:
        store = self.store
        assert self.worker_pk is not None
        heartbeat_every = self.lease_seconds * defaults.HEARTBEAT_FRACTION
        reap_every = self.lease_seconds / 2
        next_heartbeat = next_reap = next_state = next_claim = 0.0
        last_flush = time.monotonic()
        # A store that announces new work (PostgreSQL's NOTIFY) lets an idle worker wait for that instead
        # of claiming every IDLE_POLL_SECONDS: an empty claim is a transaction of several statements, and
        # a fleet of idle workers polling would keep the database busy for nothing.
        idle_poll = defaults.IDLE_LISTEN_POLL_SECONDS if getattr(store, "announces_work", False) \
            else defaults.IDLE_POLL_SECONDS
        beat_batches: set[str] = set()  # the batches named by the last heartbeat
        while not self.stopping:
            now = time.monotonic()
            if len(self.outcomes) >= defaults.FLUSH_ITEMS or \
                    (self.outcomes and now - last_flush >= defaults.FLUSH_SECONDS):
                self._flush()
                last_flush = now
            for r in self.runners.values():
                r.check_timeouts(time.time())
            if now >= next_state and self.runners:
                self._check_states()
                next_state = now + defaults.STATE_POLL_SECONDS
            throttled = self.throttle is not None and self._over_thresholds(now, heartbeat_every)
            if self._suspect is not None:
                self._run_suspect()
            elif (now >= next_claim or self._hungry()) and not throttled:
                got = self._claim()
                next_claim = now + (defaults.FLUSH_SECONDS if got else
                                    defaults.IDLE_POLL_SECONDS if self.runners else idle_poll)
            held = {r.rt.batch_id for r in self.runners.values()}
            # Heartbeat on time, and also (at most every HEARTBEAT_MIN_SECONDS) when the batches held
            # change, so that `batchyard workers` and /health say what each worker runs now, not at
            # its last beat.
            if now >= next_heartbeat or (held != beat_batches and
                                         now >= next_heartbeat - heartbeat_every + defaults.HEARTBEAT_MIN_SECONDS):
                running = {r.rt.batch_id: r.in_flight + len(r.buffer) for r in self.runners.values()}
                if not store.heartbeat(self.worker_pk, running):
                    self._lost_lease()
                beat_batches = held
                next_heartbeat = now + heartbeat_every
            if now >= next_reap:
                store.reap(self.lease_seconds)
                next_reap = now + reap_every
                if self._with_resource:
                    self._close_resources()
            if self.on_cycle:
                self.on_cycle(self)
            if self.outcomes or self.runners:
                self.wake.wait(defaults.FLUSH_SECONDS)
            elif not self.wake.is_set():
                # Idle: a store that can be told of new work (PostgreSQL's LISTEN) returns as soon as a
                # batch is created or resumed anywhere; one that cannot returns False at once, and the
                # worker polls as before, its wake event still answering a stop at once.
                t0 = time.monotonic()
                if store.wait_for_work(defaults.IDLE_POLL_SECONDS):
                    next_claim = 0.0
                else:
                    self.wake.wait(max(0.0, defaults.IDLE_POLL_SECONDS - (time.monotonic() - t0)))
            self.wake.clear()
        self._shutdown()

    def _over_thresholds(self, now: float, refresh: float) -> bool:
        """Whether memory, disk or CPU is past its threshold. On the way over, hand back what has not started
        (other workers may have room for it) and give up the slots; either way, say so on the batches served
        (refreshed while it lasts: a note that stops being refreshed stops showing)."""
        assert self.throttle is not None and self.worker_pk is not None
        why = self.throttle.reason()
        if why != self.throttled:
            if why:
                log.warning("worker %s stops claiming: %s", self.name, why)
                for pk, runner in list(self.runners.items()):
                    runner.set_grant(0)
                    self._release(runner)
                    self.store.drop_slots(self.worker_pk, pk)
                    self._retire_if_idle(pk, runner)
            else:
                log.warning("worker %s claims again: back under its thresholds", self.name)
            self.throttled = why
        if why != self._noted or (why and now >= self._note_at):
            self.store.set_throttle(why, sorted(self.processors), self.only)
            self._noted, self._note_at = why, now + refresh
        return why is not None

    def _hungry(self) -> bool:
        now = time.monotonic()
        return any(r.hungry and not r.closed and now >= r.dry_until for r in self.runners.values())

    def _claim(self) -> int:
        assert self.worker_pk is not None
        held = {pk: r.held() for pk, r in self.runners.items() if not r.closed}
        res = self.store.claim(self.worker_pk, self.processors, self.concurrency, held, self.only,
                               self.tenant_cap)
        if res.items:
            failpoints.hit("after_claim")
        n = 0
        for pk, grant in res.grants.items():
            runner = self.runners.get(pk)
            if runner is None or runner.closed:
                if not grant and pk not in res.items:
                    continue
                rt = res.batches[pk]
                runner = self.runners[pk] = Runner(self, rt, self.processors[rt.processor])
            items = res.items.get(pk)
            if items:
                items = self._alone(runner, items)
            if items:
                runner.add(items)
                n += len(items)
            rt = res.batches.get(pk)
            if rt is not None and rt.pending <= 0:  # nothing left to claim: do not ask again at once
                runner.dry_until = time.monotonic() + defaults.IDLE_POLL_SECONDS
            runner.set_grant(grant)
        for pk, runner in list(self.runners.items()):
            if not res.grants.get(pk):
                # No slots for this batch now (paused, cancelled, failure policy tripped, or given to
                # others): hand back what has not started, so it is neither stuck nor held from others.
                runner.set_grant(0)
                self._release(runner)
            self._retire_if_idle(pk, runner)
        return n

    # An item whose worker died is claimed again with one more attempt counted, and so is every item that
    # worker held. One claimed past its max_attempts was lost beyond what its processor may use: it may be the
    # item that kills its worker (a crash in native code, os._exit, the OOM killer). It runs alone, nothing
    # else buffered or in flight in this worker, so that if it kills the worker again only its own count
    # goes up: the items that were merely claimed with it are not failed as lost alongside it when the store
    # gives up on it (max_attempts + LOST_ATTEMPTS_GRACE losses).

    def _alone(self, runner: Runner, items: list[Claimed]) -> list[Claimed]:
        """The claimed items to run now: all, or none while an item lost past its attempts waits to run
        alone; the others go straight back (their attempt uncounted)."""
        if self._suspect is None:
            first = next((c for c in items if c[4] > runner.rt.max_attempts), None)
            if first is None:
                return items
            self._suspect, self._suspect_mark = (runner, first), None
            items = [c for c in items if c is not first]
            for r in self.runners.values():
                self._release(r)
        if items:
            assert self.worker_pk is not None
            self.store.release(self.worker_pk, runner.rt.pk, [c[0] for c in items])
        return []

    def _run_suspect(self) -> None:
        """Start the item set aside by _alone once nothing else runs or waits to be recorded; resume claiming
        once its outcome is recorded."""
        assert self._suspect is not None and self.worker_pk is not None
        runner, c = self._suspect
        if self._suspect_mark is not None:
            if self._flushed > self._suspect_mark:
                self._suspect = None
            return
        if runner.closed or runner.grant == 0:  # its batch was paused or cancelled meanwhile
            self.store.release(self.worker_pk, runner.rt.pk, [c[0]])
            self._suspect = None
        elif not self.outcomes and not any(r.current or r.buffer for r in self.runners.values()):
            log.warning("item %s of batch %s was lost with its worker past its %d attempts: running it alone",
                        c[2] if c[2] is not None else c[1], runner.rt.batch_id, runner.rt.max_attempts)
            self._suspect_mark = self._flushed
            runner.add([c])

    def _retire_if_idle(self, pk: int, runner: Runner) -> None:
        if runner.grant == 0 and not runner.buffer and not runner.current:
            runner.close()
            del self.runners[pk]
            if runner.proc.resource is not None and self.store.batch_states([pk]).get(pk) in FINAL_BATCH:
                self._close_resources()  # the batch ended: its resource goes now, not at the next sweep

    def _flush(self) -> None:
        batch = []
        pop = self.outcomes.popleft
        try:
            while True:
                batch.append(pop())
        except IndexError:
            pass
        if batch:
            assert self.worker_pk is not None
            try:
                res = self.store.record(self.worker_pk, batch)
            except BaseException:
                self.outcomes.extendleft(reversed(batch))  # not recorded: the next flush tries them again
                raise
            failpoints.hit("after_commit")
            self.recorded += res.accepted
            self._flushed += len(batch)
            if res.refused:
                log.warning("%d outcomes refused: their leases had been taken over", res.refused)
        if self.usage:
            self._flush_usage()

    def _flush_usage(self) -> None:
        """What items used of their batches' resources, summed per batch: one statement per group commit."""
        usage: dict[int, float] = {}
        pop = self.usage.popleft
        try:
            while True:
                pk, amount = pop()
                usage[pk] = usage.get(pk, 0.0) + amount
        except IndexError:
            pass
        self.store.use_resource(usage)

    def _close_resources(self) -> None:
        """Tear down the resources of batches that ended (any worker with their processor may: the store lets
        exactly one close each), each on a thread of its own so that a slow teardown never stalls the pump."""
        self._teardowns = [t for t in self._teardowns if t.is_alive()]
        for pk, batch_id, name, params in self.store.resources_to_close(self._with_resource):
            resource = self.processors[name].resource
            assert resource is not None
            t = threading.Thread(target=resources.close, args=(self.store, resource, pk, batch_id, params),
                                 daemon=True, name=f"batchyard-teardown-{batch_id}")
            t.start()
            self._teardowns.append(t)

    def _check_states(self) -> None:
        states = self.store.batch_states(self.runners)
        for pk, runner in list(self.runners.items()):
            status = states.get(pk)
            if status != BatchStatus.RUNNING:
                # paused, cancelling or gone: stop claiming, hand back what has not started
                runner.set_grant(0)
                self._release(runner)
                if status is None:
                    runner.close()
            self._retire_if_idle(pk, runner)

    def _release(self, runner: Runner) -> None:
        items = runner.take_buffer()
        if items:
            assert self.worker_pk is not None
            self.store.release(self.worker_pk, runner.rt.pk, [c[0] for c in items])

    def _lost_lease(self) -> None:
        """The store reaped this worker (it stalled past its lease): drop everything, start afresh."""
        log.warning("worker %s lost its lease; its items were reclaimed by others", self.name)
        for r in self.runners.values():
            r.take_buffer()
            r.current.clear()
            r.close()
        self.runners.clear()
        self.outcomes.clear()
        self._suspect = None
        self.worker_pk = self.store.register_worker(self.name, sorted(self.processors), self.concurrency)

    def _shutdown(self) -> None:
        if self._suspect is not None and self._suspect_mark is None:  # set aside, never started: back it goes
            runner, c = self._suspect
            assert self.worker_pk is not None
            self.store.release(self.worker_pk, runner.rt.pk, [c[0]])
        self._suspect = None
        for r in self.runners.values():
            r.set_grant(0)
            self._release(r)
        deadline = getattr(self, "_grace_deadline", time.monotonic())
        while any(r.current for r in self.runners.values()) and time.monotonic() < deadline:
            if self.outcomes:
                self._flush()
            time.sleep(0.02)
        for r in self.runners.values():
            r.close()
        self._flush()
        if self._with_resource:
            self._close_resources()
            for t in self._teardowns:
                t.join(max(0.0, deadline - time.monotonic()))
        # Items still in flight go back to pending with their attempt counted.
        assert self.worker_pk is not None
        self.store.unregister_worker(self.worker_pk)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop_loop, self._loop)

    @staticmethod
    def _stop_loop(loop: asyncio.AbstractEventLoop) -> None:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.call_soon(loop.stop)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "runners": {r.rt.batch_id: {"grant": r.grant, "buffered": len(r.buffer),
                                                             "in_flight": r.in_flight}
                                              for r in self.runners.values()}}
