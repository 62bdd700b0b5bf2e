"""Seed 000's batch upload: every file of a folder to Swarm through a Bee node, with one postage stamp per batch.

The stamp is the batch's shared resource (``batchyard.Resource``): bought once (``POST /stamps/{amount}/{depth}``)
before the first file, polled until the node says it is usable, stored with the batch, and sent as
``Swarm-Postage-Batch-Id`` with every file (``POST /bzz``). A resumed batch, another worker or a restarted server
uses the stored stamp instead of buying another; a purchase interrupted while the stamp was becoming usable is
picked up by the next setup (it was checkpointed). Each file reports the chunks it stamped, so the batch shows the
stamp's utilisation; the stamp's price is the batch's cost, in BZZ.

A full stamp (the node answers 402 ``batch is overissued``) fails the files that no longer fit, permanently and
saying so; an unknown stamp fails them too. A node that is not ready (422) or busy (429/503) is retried.

    batchyard run FOLDER --processor swarm-upload --processors examples/swarm_upload/processors.py \\
        --param preset=medium --param bee_url=http://127.0.0.1:1633
"""

from __future__ import annotations

import math
import mimetypes
import posixpath
import threading
import time
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

import batchyard

CHUNK = 4096  # bytes: Swarm's chunk size
PLUR_PER_BZZ = 10 ** 16
# The seed's size presets: a stamp's depth sets its capacity (2**depth chunks), its amount how long it lasts.
# 17 and 1e9 PLUR are the seed tool's defaults (DEFAULT_POSTAGE_DEPTH, DEFAULT_POSTAGE_AMOUNT); each preset up
# holds about ten times more.
PRESETS: dict[str, tuple[int, int]] = {
    "small": (17, 1_000_000_000),
    "medium": (20, 1_000_000_000),
    "large": (23, 1_000_000_000),
}
DEFAULT_PRESET = "small"  # what a one-file upload buys when it is not told otherwise
RETRY = batchyard.RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=10)


class UploadParams(BaseModel):
    """The batch's shared parameters (``--param KEY=VALUE``). Each item is a file: ``path``, ``name``, ``size``."""

    bee_url: str = Field("http://127.0.0.1:1633", description="The Bee node's API.")
    preset: Literal["small", "medium", "large"] = Field(DEFAULT_PRESET, description="Stamp size (see PRESETS).")
    depth: int | None = Field(None, ge=1, le=255, description="Stamp depth, instead of the preset's.")
    amount: int | None = Field(None, gt=0, description="Stamp amount (PLUR per chunk), instead of the preset's.")
    label: str | None = Field(None, description="The stamp's label on the node (default: the batch id).")
    std: str | None = Field(None, description="A provenance standard to record with each upload (seed: --std).")
    usable_timeout_s: float = Field(600, gt=0, description="How long to wait for a bought stamp to be usable.")

    def stamp_size(self) -> tuple[int, int]:
        depth, amount = PRESETS[self.preset]
        return self.depth or depth, self.amount or amount


def stamp_price(depth: int, amount: int) -> float:
    """What a stamp costs, in BZZ: ``amount`` PLUR for each of its ``2**depth`` chunks."""
    return amount * 2 ** depth / PLUR_PER_BZZ


def chunks_of(size: int) -> int:
    """Chunks a file of ``size`` bytes stamps: its data, and its manifest entry."""
    return max(1, math.ceil(size / CHUNK)) + 1


_local = threading.local()


def _http() -> httpx.Client:
    """One connection pool per lane thread (a client is not shared across threads)."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
    return client


def _refusal(r: httpx.Response) -> str:
    try:
        return str(r.json().get("message") or r.text)
    except ValueError:
        return r.text[:200]


class Stamp(batchyard.Resource):
    """One postage stamp for the whole batch."""

    def setup(self, ctx: batchyard.ResourceContext) -> dict[str, Any]:
        p = UploadParams.model_validate(ctx.params)
        bee = p.bee_url.rstrip("/")
        depth, amount = p.stamp_size()
        prev = ctx.previous or {}
        http = _http()
        stamp_id = None
        # Bought before: by a setup that was interrupted (kill -9 while it became usable), or for this batch before
        # it was retried. Still on the node: use it, do not buy another.
        if prev.get("batch_id") and prev.get("bee_url") == bee and \
                http.get(f"{bee}/stamps/{prev['batch_id']}").status_code == 200:
            stamp_id, depth, amount = prev["batch_id"], prev["depth"], prev["amount"]
            ctx.logger.info("batch %s: reusing stamp %s", ctx.batch_id, stamp_id)
        if stamp_id is None:
            r = http.post(f"{bee}/stamps/{amount}/{depth}", params={"label": p.label or ctx.batch_id})
            if r.status_code != 201:
                raise batchyard.PermanentError(f"the Bee node at {bee} sold no stamp (depth {depth}, amount "
                                               f"{amount}): {r.status_code} {_refusal(r)}")
            stamp_id = r.json()["batchID"]
            prev = {}
        state = {"batch_id": stamp_id, "bee_url": bee, "depth": depth, "amount": amount,
                 "price_bzz": stamp_price(depth, amount), "label": p.label or ctx.batch_id}
        if not prev.get("paid"):
            # Durable before the wait: a setup interrupted from here on finds this stamp instead of buying one.
            ctx.checkpoint({**state, "paid": False})
        deadline = time.monotonic() + p.usable_timeout_s
        while True:
            r = http.get(f"{bee}/stamps/{stamp_id}")
            if r.status_code == 200 and r.json().get("usable"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"stamp {stamp_id} not usable after {p.usable_timeout_s:g}s")
            time.sleep(0.5)
        if not prev.get("paid"):
            ctx.report_cost(state["price_bzz"])  # the batch's cost: counted once, with the stamp that was bought
        ctx.capacity = 2 ** depth  # chunks; every file reports the chunks it stamped
        return {**state, "paid": True}


@batchyard.processor("swarm-upload", params=UploadParams, resource=Stamp, cost_unit="BZZ", retry=RETRY,
                     description="Upload each file to Swarm (a Bee node), one postage stamp for the whole batch.")
def swarm_upload(item: batchyard.Item, ctx: batchyard.Context) -> dict[str, Any]:
    p: UploadParams = item.params
    stamp = ctx.resource
    payload = item.payload if isinstance(item.payload, dict) else {"path": str(item.payload)}
    path = Path(payload["path"])
    name = payload.get("name") or posixpath.basename(str(path))
    data = path.read_bytes()
    r = _http().post(f"{stamp['bee_url']}/bzz", params={"name": name}, content=data,
                     headers={"Swarm-Postage-Batch-Id": stamp["batch_id"],
                              "Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream"})
    short = f"{stamp['batch_id'][:8]}…"
    if r.status_code == 402:
        raise batchyard.PermanentError(
            f"stamp {short} is full ({_refusal(r)}): {name} ({len(data):,} bytes, {chunks_of(len(data))} chunks) "
            f"was not uploaded; a larger stamp holds more (--param preset=medium or large)")
    if r.status_code == 404:
        raise batchyard.PermanentError(f"stamp {short} is unknown to the Bee node at {stamp['bee_url']}")
    if r.status_code in (422, 429, 503):  # not usable yet, or the node is busy: try again a little later
        raise batchyard.RetryAfter(float(r.headers.get("Retry-After") or 2),
                                   f"Bee node: {r.status_code} {_refusal(r)}")
    if r.status_code != 201:
        raise RuntimeError(f"Bee node: {r.status_code} {_refusal(r)}")
    chunks = chunks_of(len(data))
    ctx.use_resource(chunks)
    result = {"swarm_ref": r.json()["reference"], "filename": name, "size": len(data), "chunks": chunks,
              "stamp_id": stamp["batch_id"]}
    if p.std:
        result["std"] = p.std
    return result
