"""Seed 001's UPC processing as a batchyard processor: check the code, look it up, write a draft listing.

An item is a UPC (a line of the input file, or a row with a ``upc`` column). The processor

1. validates the check digit (GTIN-8/12/13/14: UPC-A is GTIN-12); a code that fails fails permanently, with
   the reason;
2. looks the code up in the catalogue service over HTTP, at most ``$UPC_LOOKUP_RATE`` (default ``8/s``) across
   every worker: the processor's rate limit. A 429 or 503 with ``Retry-After`` is retried when the service said
   (``batchyard.RetryAfter``); without it, or on other 5xx and network errors, after the usual backoff; a code the
   catalogue does not have fails permanently;
3. writes a draft listing (JSON) for the code to ``output_dir``, unless ``create_drafts`` is false.

``test_mode`` (seed 001's test mode, the API's ``test_mode: true``) validates and plans: it reports the lookup
it would make and the draft it would write, and makes no request and writes nothing.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field

import batchyard
from batchyard.core.retry import retry_after_seconds

PROCESSOR = "upc-lookup"
DATA_ENV = "UPC_LOOKUP_DATA"
RATE = os.environ.get("UPC_LOOKUP_RATE", "8/s")
GTIN_LENGTHS = (8, 12, 13, 14)
TITLE_MAX = 80  # eBay's limit on a listing title
RETRY = batchyard.RetryPolicy(max_attempts=8, base_delay=0.5, max_delay=10)


def data_dir() -> Path:
    """Where the example keeps its codes and drafts (``make_codes.py`` writes there too)."""
    return Path(os.environ.get(DATA_ENV, ".batchyard/upc_lookup"))


def check_digit(body: str) -> int:
    """The GS1 check digit of a code without its last digit: weights 3 and 1 alternating from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def validate(code: str) -> str:
    """The code, if it is a GTIN with the right check digit; a permanent failure saying why otherwise."""
    if not code.isdigit() or len(code) not in GTIN_LENGTHS:
        raise batchyard.PermanentError(f"{code!r} is not a UPC: expected 12 digits (or 8, 13, 14 for a GTIN)")
    expected = check_digit(code[:-1])
    if int(code[-1]) != expected:
        raise batchyard.PermanentError(f"UPC {code}: invalid check digit {code[-1]} (expected {expected})")
    return code


class LookupParams(BaseModel):
    upc: str | None = Field(None, description="The code (default: the item itself).")
    catalogue_url: str = Field(default_factory=lambda: os.environ.get("UPC_CATALOGUE_URL", "http://127.0.0.1:8765"),
                               description="The catalogue service (default $UPC_CATALOGUE_URL).")
    output_dir: Path = Field(default_factory=lambda: data_dir() / "drafts", description="Where drafts go.")
    create_drafts: bool = Field(True, description="Write a draft listing per code found (seed 001's default).")
    test_mode: bool = Field(False, description="Validate and plan only: no lookup, no draft.")
    condition: str = "New"


_local = threading.local()


def http() -> httpx.Client:
    """One client per worker thread: connections are reused, and never shared between threads."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0))
    return client


def lookup(url: str, key: str) -> dict[str, Any]:
    r = http().get(url, headers={"Idempotency-Key": key, "Accept": "application/json"})
    if r.status_code == 200:
        return r.json()  # type: ignore[no-any-return]
    if r.status_code == 404:
        raise batchyard.PermanentError(f"not in the catalogue ({url})")
    if r.status_code in (429, 503):
        wait = retry_after_seconds(r.headers.get("Retry-After"))
        message = f"HTTP {r.status_code} from the catalogue"
        if wait is not None:
            raise batchyard.RetryAfter(wait, f"{message}; retrying after {wait:g}s as it asked")
        raise RuntimeError(message)  # no Retry-After: the usual backoff
    if r.status_code >= 500:
        raise RuntimeError(f"HTTP {r.status_code} from the catalogue")
    raise batchyard.PermanentError(f"HTTP {r.status_code} from the catalogue: {r.text[:200]}")


def draft(product: dict[str, Any], condition: str) -> dict[str, Any]:
    """A draft listing, as a seller's tool would fill one in from the catalogue."""
    title = f"{product['artist']} - {product['title']} ({product['format']}, {product['year']})"
    category = {"Vinyl LP": "Music > Records", "Cassette": "Music > Cassettes"}.get(product["format"],
                                                                                   "Music > CDs")
    return {
        "status": "draft",
        "sku": product["upc"],
        "title": title[:TITLE_MAX],
        "category": category,
        "condition": condition,
        "price": {"value": product["price"]["amount"], "currency": product["price"]["currency"]},
        "images": [product["artwork"]],
        "description": f"{product['title']} by {product['artist']}, {product['format']}, {product['tracks']} "
                       f"tracks, {product['label']} ({product['year']}). Condition: {condition}.",
        "item_specifics": {"Artist": product["artist"], "Release Title": product["title"],
                           "Format": product["format"], "Release Year": str(product["year"]),
                           "Record Label": product["label"], "UPC": product["upc"]},
    }


@batchyard.processor(PROCESSOR, params=LookupParams, rate_limit=RATE, retry=RETRY, timeout=60,
                     description="Validate a UPC's check digit, look it up in the catalogue (rate-limited, "
                                 "honouring Retry-After) and write a draft listing.")
def upc_lookup(item: batchyard.Item, ctx: batchyard.Context) -> dict[str, Any]:
    p: LookupParams = item.params
    code = validate(str(p.upc if p.upc is not None else item.payload).strip())
    url = f"{p.catalogue_url.rstrip('/')}/products/{code}"
    target = p.output_dir / f"{code}.json"
    if p.test_mode:
        return {"upc": code, "valid": True, "test_mode": True, "lookup": url,
                "draft": str(target) if p.create_drafts else None}
    product = lookup(url, ctx.idempotency_key)
    written = None
    if p.create_drafts:
        p.output_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{ctx.attempt}.partial")  # whole or nothing, rerun or not
        partial.write_text(json.dumps(draft(product, p.condition), indent=2) + "\n")
        partial.replace(target)
        written = str(target)
    return {"upc": code, "title": product["title"], "artist": product["artist"], "format": product["format"],
            "price": product["price"]["amount"], "draft": written}
