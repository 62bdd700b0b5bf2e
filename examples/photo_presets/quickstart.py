"""Seed 003's quick start, with ``batchyard.Client``: start a batch of photos with a config, monitor it, pause,
resume, cancel; crash the server mid-batch, restart it and find the batch recovered, then finish it; clean up
batches older than N days.

It starts its own ``batchyard serve`` (on a free port, with this example's processors and seed 003's API
mounted) so that it can crash and restart it; with ``--url`` it uses yours and skips the crash.

    python examples/photo_presets/make_photos.py --count 40
    python examples/photo_presets/quickstart.py
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from processors import PROCESSOR, data_dir  # this file's folder is on sys.path when run as a script

from batchyard import Client
from batchyard.client.errors import ApiError

HERE = Path(__file__).resolve().parent
CONFIG = {"preset": "WhiteLayer_v4", "blend": 60}
PARALLEL = 2  # photos at once: slow enough to watch, pause and crash mid-batch


class Server:
    """``batchyard serve`` in a child process, which this script may kill (as a crash would) and restart."""

    def __init__(self, store: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batchyard", "serve", "--port", str(self.port), "--store", str(self.store),
             "--processors", str(HERE / "processors.py"), "--mount", str(HERE / "api.py"),
             "--workers", str(PARALLEL), "--log-level", "warning"], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"batchyard serve exited with {self.proc.returncode}")
            try:
                httpx.get(f"{self.url}/api/v1/health", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        sys.exit("batchyard serve did not start within 30 s")

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no graceful stop, items in flight are left leased
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def show(client: Client, batch_id: str) -> None:
    """Seed 003's "monitoring progress", from batchyard's status."""
    b = client.get_batch(batch_id)
    print(f"  Status: {b.status}" + (f" ({b.pause_reason})" if b.pause_reason else ""))
    print(f"  Progress: {b.progress_percent}%")
    print(f"  Processed: {b.items_succeeded}/{b.items_total}")
    print(f"  Failed: {b.items_failed}")


def wait_until(client: Client, batch_id: str, done_at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = client.get_batch(batch_id)
        if b.items_succeeded + b.items_failed >= done_at_least or b.is_final:
            return
        time.sleep(0.05)
    sys.exit(f"{batch_id}: fewer than {done_at_least} photos done after {timeout} s")


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"unexpected: {message}")


def quickstart(client: Client, photo_ids: list[int], server: Server | None, days_old: float) -> None:
    print("1. Starting a batch")
    batch = client.create_batch(PROCESSOR, photo_ids, params=CONFIG, parallel_jobs=PARALLEL, tags=["quickstart"])
    print(f"Batch started: {batch.batch_id}")

    print("2. Monitoring progress")
    wait_until(client, batch.batch_id, 1)
    show(client, batch.batch_id)

    print("3. Pausing the batch")
    paused = client.pause(batch.batch_id)
    print(f"Batch paused successfully ({paused.status}, {paused.pause_reason})")
    time.sleep(1.0)  # photos in flight when it paused finish; no new one starts
    held = client.get_batch(batch.batch_id).items_succeeded
    time.sleep(0.5)
    still = client.get_batch(batch.batch_id)
    check(still.status == "paused" and still.items_succeeded == held, "a paused batch went on")
    print(f"  paused at {held}/{still.items_total} photos, and it stays there")

    print("4. Resuming the batch")
    client.resume(batch.batch_id)
    print("Batch resumed successfully")
    final = client.wait(batch.batch_id, timeout=300)
    check(final.status == "completed" and final.items_succeeded == len(photo_ids), f"{final.status}")
    print(f"  {final.status}: {final.items_succeeded} photos processed, {final.items_failed} failed")

    print("5. Cancelling a batch")
    other = client.create_batch(PROCESSOR, photo_ids, params={"preset": "Warm_v2", "blend": 80},
                                parallel_jobs=PARALLEL, tags=["quickstart"])
    wait_until(client, other.batch_id, 1)
    client.cancel(other.batch_id)
    print("Batch cancelled successfully")
    cancelled = client.wait(other.batch_id, timeout=60)
    check(cancelled.status == "cancelled", cancelled.status)
    print(f"  cancelled with {cancelled.items_succeeded} photos done, {cancelled.items_cancelled} never started")

    if server is not None:
        print("6. System restart recovery")
        mono = client.create_batch(PROCESSOR, photo_ids, params={"preset": "Mono_v1", "blend": 100},
                                   parallel_jobs=PARALLEL, tags=["quickstart"])
        wait_until(client, mono.batch_id, 2)
        server.crash()
        print(f"  the server crashed (SIGKILL) with {mono.batch_id} running; restarting it")
        server.start()
        # The server recovered the batch as it started; seed 003's API (mounted) reports what that found
        seed = httpx.post(f"{server.url}/batch/recover", timeout=30).json()
        print(f"Recovered {seed['recovered_count']} interrupted batches")
        result = client.recover()  # batchyard's own: anything left since (workers that died meanwhile)
        print(f"  and {result.items} photos of {result.batches} batches more since the start-up")
        for b in client.iter_batches(tag="quickstart"):
            if b.status == "paused":
                print(f"Resuming batch {b.batch_id}")
                client.resume(b.batch_id)
        found = client.get_batch(mono.batch_id)
        print(f"  {mono.batch_id} after the restart: {found.status}, "
              f"{found.items_succeeded}/{found.items_total} photos done")
        finished = client.wait(mono.batch_id, timeout=300)
        check(finished.status == "completed" and finished.items_succeeded == len(photo_ids), finished.status)
        print(f"  {finished.status}: all {finished.items_succeeded} photos processed, none lost")

    print("7. Cleaning up old batches")
    cleaned = client.cleanup(days_old)
    print(f"Cleaned up {cleaned.count} old batches (older than {days_old:g} days)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="A running batchyard serve with this example mounted (default: start one).")
    parser.add_argument("--days-old", type=float, default=7, help="Clean up batches older than this.")
    parser.add_argument("--store", type=Path, default=None, help="Store of the server started here.")
    args = parser.parse_args()
    ids_file = data_dir() / "photo_ids.txt"
    if not ids_file.is_file():
        sys.exit(f"no {ids_file}: run `python examples/photo_presets/make_photos.py` first")
    photo_ids = [int(line) for line in ids_file.read_text().split()]
    server = None
    if args.url is None:
        server = Server(args.store or data_dir() / "quickstart.db")
        server.start()
    try:
        with Client(args.url or server.url, timeout=30) as client:  # type: ignore[union-attr]
            quickstart(client, photo_ids, server, args.days_old)
    except ApiError as exc:
        sys.exit(f"the server refused: {exc}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
