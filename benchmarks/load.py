"""The server under polling load, while a batch runs through it.

A real ``batchyard serve`` (subprocess, SQLite) runs an N-item batch (default 100,000 ``noop`` items: CPU-bound,
the worst case when the worker shares the server's interpreter; ``--processor sleep --params '{"ms": 10}'
--parallel 64`` is the I/O-bound case most processors are). A load generator in its own process runs C clients
(default 100), each asking R times a second (default 5: 500 requests/s in all) for the batch's status
(``GET /batches/{id}``) or a page of its items (``GET /batches/{id}/items``, 100 items), at random, from the
moment the batch starts until it completes. Reported:

- latency p50 / p99 / max and errors (non-200 answers, failed or timed-out connections). Latency is measured
  from when the request was due, not when it went out, so a client held up by a slow answer does not hide
  the wait (no coordinated omission); the service time (sent to answered) is shown beside it;
- the batch's throughput (items over its own started_at..completed_at) under that load, against the same
  batch on a fresh server with nobody polling;
- a ramp: the request rate raised step by step (more clients at R each) while a long batch of 10 ms sleeps
  runs, and the highest rate whose p99 stays under 100 ms with no errors.

``--separate-worker`` runs the same with ``batchyard serve --workers 0`` plus a ``batchyard worker`` process
on the same store, so the API and the items do not share one interpreter (and its GIL).

The generator is a minimal HTTP/1.1 keep-alive client on asyncio streams (one connection per client): a
general client (httpx) costs enough CPU per request to measure itself at these rates on a small machine.

    python benchmarks/load.py                       # the figures in the README
    python benchmarks/load.py --separate-worker     # the same with the worker in its own process
    python benchmarks/load.py --n 2000 --clients 10 --ramp 50,100 --step-s 1 --ramp-items 5000 --json  # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BATCHYARD = str(Path(sys.executable).parent / "batchyard")
API = "/api/v1"
P99_LIMIT_S = 0.100


# -- the server ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """``batchyard serve`` (and with ``separate``, a ``batchyard worker``) on a fresh store."""

    workers: int
    separate: bool = False
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> Server:
        self.dir = Path(tempfile.mkdtemp(prefix="batchyard-load-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        store = str(self.dir / "store.db")
        log = self.log = open(self.dir / "serve.log", "wb")
        serve_workers = "0" if self.separate else str(self.workers)
        self.procs.append(subprocess.Popen(
            [BATCHYARD, "serve", "--port", str(self.port), "--store", store, "--workers", serve_workers,
             "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        if self.separate:
            self.procs.append(subprocess.Popen(
                [BATCHYARD, "worker", "--store", store, "--concurrency", str(self.workers)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + API + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"batchyard serve did not start:\n{(self.dir / 'serve.log').read_text()}")

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def submit(self, n: int, processor: str, params: dict[str, Any] | None = None, parallel: int = 8) -> str:
        """Create the batch pending (the clock starts with ``start``)."""
        r = httpx.post(self.url + API + "/batches", timeout=600, json={
            "processor": processor, "items": list(range(n)), "params": params or {}, "parallel_jobs": parallel,
            "start": False})
        r.raise_for_status()
        return str(r.json()["batch_id"])

    def start(self, batch_id: str) -> None:
        httpx.post(f"{self.url}{API}/batches/{batch_id}/start", timeout=30).raise_for_status()

    def status(self, batch_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.url}{API}/batches/{batch_id}", timeout=30)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def wait(self, batch_id: str, timeout: float = 3600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.status(batch_id)
            if info["status"] in ("completed", "failed", "cancelled"):
                return info
            time.sleep(0.5)  # our own poll: 2 requests/s, nothing beside the load's
        raise TimeoutError(f"batch {batch_id} did not finish within {timeout}s")


def throughput(info: dict[str, Any]) -> float:
    """Items per second over the batch's own run (started_at to completed_at, the server's clock)."""
    from datetime import datetime

    started = datetime.fromisoformat(info["started_at"])
    completed = datetime.fromisoformat(info["completed_at"])
    return float(info["items_total"]) / max((completed - started).total_seconds(), 1e-9)


# -- the load generator (its own process) --------------------------------------------------------------


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:] if line)}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status


async def _client(url: str, paths: list[str], rate: float, stop_at: float, out: dict[str, Any],
                  seed: int, stopping: list[bool]) -> None:
    host, port = url.removeprefix("http://").split(":")
    rng = random.Random(seed)
    period = 1.0 / rate
    due = time.perf_counter() + period * rng.random()  # phases spread over the first period
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while True:
        now = time.perf_counter()
        if due > stop_at or stopping[0]:
            break
        if due > now:
            await asyncio.sleep(due - now)
        sent = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
            status = await asyncio.wait_for(_request(*conn, host=f"{host}:{port}", path=rng.choice(paths)), 10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            out["errors"].append(f"{type(exc).__name__}: {exc}"[:200])
            if conn is not None:
                conn[1].close()
            conn = None
        else:
            done = time.perf_counter()
            if status != 200:
                out["errors"].append(f"HTTP {status}")
            else:
                out["latency"].append(done - due)  # from when it was due: waits behind a slow answer count
                out["service"].append(done - sent)
                out["at"].append(done)
        due += period
    if conn is not None:
        conn[1].close()


def _generator_main(url: str, batch_id: str, clients: int, rate: float, duration: float,
                    stop: Any, results: Any) -> None:
    """In the generator process: run until ``stop`` is set (or ``duration`` passes), then report."""
    paths = [f"{API}/batches/{batch_id}", f"{API}/batches/{batch_id}/items"]
    out: dict[str, Any] = {"latency": [], "service": [], "at": [], "errors": []}  # the clients append as they go

    async def run() -> None:
        stop_at = time.perf_counter() + duration
        stopping = [False]
        tasks = [asyncio.create_task(_client(url, paths, rate, stop_at, out, seed=i, stopping=stopping))
                 for i in range(clients)]
        while not all(t.done() for t in tasks):
            if stop.is_set():  # what was measured is kept; a request cut short is not counted
                # The flag as well as cancel(): before 3.12, asyncio.wait_for may swallow a cancellation that
                # arrives as its inner request completes, and that client would then carry on for ever.
                stopping[0] = True
                for t in tasks:
                    t.cancel()
                break
            await asyncio.sleep(0.05)
        await asyncio.wait(tasks, timeout=15)

    started = time.perf_counter()
    asyncio.run(run())
    out["elapsed"] = time.perf_counter() - started
    results.put(out)


@dataclass
class Load:
    """A generator process: started now, stopped by ``finish``."""

    url: str
    batch_id: str
    clients: int
    rate: float
    duration: float = 3600.0

    def __enter__(self) -> Load:
        ctx = mp.get_context("spawn")
        self.stop, self.results = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_generator_main, args=(self.url, self.batch_id, self.clients, self.rate,
                                                              self.duration, self.stop, self.results), daemon=True)
        self.proc.start()
        return self

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        out: dict[str, Any] = self.results.get(timeout=120)
        self.proc.join(30)
        return out

    def __exit__(self, *exc: object) -> None:
        if self.proc.is_alive():
            self.proc.kill()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(out: dict[str, Any]) -> dict[str, Any]:
    lat, svc = out["latency"], out["service"]
    elapsed = out.get("elapsed") or 1.0
    count = len(lat) + len(out["errors"])
    return {"requests": count, "rate_per_s": round(count / elapsed, 1),
            "p50_ms": round(percentile(lat, 0.50) * 1000, 2), "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
            "max_ms": round(max(lat, default=float("nan")) * 1000, 2),
            "service_p50_ms": round(percentile(svc, 0.50) * 1000, 2),
            "service_p99_ms": round(percentile(svc, 0.99) * 1000, 2),
            "errors": len(out["errors"]), "error_samples": sorted(set(out["errors"]))[:5]}


# -- the measurements ----------------------------------------------------------------------------------


def alone(args: argparse.Namespace) -> float:
    with Server(args.workers, args.separate_worker) as srv:
        bid = srv.submit(args.n, args.processor, params=args.params, parallel=args.parallel)
        srv.start(bid)
        return throughput(srv.wait(bid))


def loaded(args: argparse.Namespace) -> tuple[float, dict[str, Any]]:
    with Server(args.workers, args.separate_worker) as srv:
        bid = srv.submit(args.n, args.processor, params=args.params, parallel=args.parallel)
        with Load(srv.url, bid, args.clients, args.rate) as load:
            time.sleep(args.warmup_s)  # connections open, phases spread, before the clock starts
            srv.start(bid)
            info = srv.wait(bid)
            out = load.finish()
        return throughput(info), summary(out)


def ramp(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rates in steps while a long batch of I/O-bound items runs (``--ramp-processor``: the common case, and
    steady for the whole ramp, where a CPU-bound batch would be over in seconds); it stops after the first step
    over the limit."""
    steps: list[dict[str, Any]] = []
    with Server(max(args.workers, args.ramp_parallel), args.separate_worker) as srv:
        bid = srv.submit(args.ramp_items, args.ramp_processor, parallel=args.ramp_parallel)
        srv.start(bid)
        for rate in args.ramp:
            clients = max(1, round(rate / args.rate))
            with Load(srv.url, bid, clients, args.rate, duration=args.step_s) as load:
                out = load.results.get(timeout=args.step_s + 120)  # it stops by itself after step_s
                load.proc.join(30)
            step = {"target_per_s": rate, "clients": clients, **summary(out),
                    "batch_status": srv.status(bid)["status"]}
            steps.append(step)
            print(f"  ramp {rate:>6} req/s ({clients} clients): achieved {step['rate_per_s']}/s, p50 "
                  f"{step['p50_ms']} ms, p99 {step['p99_ms']} ms, errors {step['errors']}, batch "
                  f"{step['batch_status']}", file=sys.stderr)
            if step["p99_ms"] >= P99_LIMIT_S * 1000 or step["errors"]:
                break
        httpx.post(f"{srv.url}{API}/batches/{bid}/cancel", timeout=30)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="items in the batch")
    parser.add_argument("--processor", default="noop", help="noop (CPU-bound: the worst case) or sleep (I/O)")
    parser.add_argument("--params", type=json.loads, default={}, help='the batch\'s params, e.g. \'{"ms": 10}\'')
    parser.add_argument("--parallel", type=int, default=8, help="the batch's parallel_jobs")
    parser.add_argument("--workers", type=int, default=0, help="the worker's concurrency (default: --parallel)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second per client")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--ramp", type=lambda s: [int(x) for x in s.split(",") if x], default=[
        200, 300, 400, 500, 750, 1000, 1500, 2000], help="request rates of the ramp, comma-separated ('' to skip)")
    parser.add_argument("--step-s", type=float, default=5.0, help="seconds per ramp step")
    parser.add_argument("--ramp-processor", default="sleep", help="the ramp's batch: 10 ms sleeps by default")
    parser.add_argument("--ramp-parallel", type=int, default=64)
    parser.add_argument("--ramp-items", type=int, default=500_000, help="enough to outlast the ramp")
    parser.add_argument("--separate-worker", action="store_true", help="serve --workers 0 + batchyard worker")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    args.workers = args.workers or args.parallel

    mode = "API + separate worker process" if args.separate_worker else "embedded worker"
    print(f"load: {args.n} {args.processor} items at parallel {args.parallel}, {args.clients} clients x "
          f"{args.rate:g}/s, {mode}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    base = alone(args)
    rate_loaded, stats = loaded(args)
    ratio = rate_loaded / base
    print(f"  alone: {base:,.0f} items/s; under load: {rate_loaded:,.0f} items/s (ratio {ratio:.2f})", file=sys.stderr)
    print(f"  {stats['requests']} requests ({stats['rate_per_s']}/s): p50 {stats['p50_ms']} ms, p99 "
          f"{stats['p99_ms']} ms, max {stats['max_ms']} ms (service p50 {stats['service_p50_ms']} / p99 "
          f"{stats['service_p99_ms']} ms), errors {stats['errors']} {stats['error_samples'] or ''}", file=sys.stderr)
    steps = ramp(args) if args.ramp else []
    held = [s for s in steps if s["p99_ms"] < P99_LIMIT_S * 1000 and not s["errors"]]
    best = max((s["rate_per_s"] for s in held), default=None)
    if args.ramp:
        print(f"  highest rate held at p99 < 100 ms: {best if best is not None else 'none of the steps'} req/s",
              file=sys.stderr)
    print(f"  load average now {os.getloadavg()[0]:.2f}", file=sys.stderr)
    figures = {"n": args.n, "processor": args.processor, "parallel": args.parallel, "mode": mode,
               "clients": args.clients, "rate_per_client": args.rate, "alone_items_per_s": round(base, 1),
               "loaded_items_per_s": round(rate_loaded, 1), "throughput_ratio": round(ratio, 3), **stats,
               "ramp": steps, "max_rate_p99_under_100ms": best, "cpus": os.cpu_count(),
               "loadavg_1m": round(os.getloadavg()[0], 2)}
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
