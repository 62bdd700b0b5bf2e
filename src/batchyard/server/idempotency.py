"""``Idempotency-Key`` on submissions (``POST /batches``, ``POST /batches/upload``): a retry is safe.

The first request with a key creates the batch (201) and the store records the key, per tenant, in the same
transaction. A request with a key the tenant used already answers with that batch as it is now (200, header
``Idempotent-Replayed: true``) when it is the same request (the same hash), and 409 ``idempotency_key_reused``
when it is another one, creating nothing either way. Two retries racing each other create one batch: the
second waits on the key in the store, then finds it. A key lives as long as its batch (deleting the batch, or
retention, frees it). Dry runs create nothing and ignore the key.

"The same request" is a SHA-256 over the validated request, defaults filled in (so ``{"processor": "x"}`` and
the same with ``"start": true`` are one request), and for an upload over the form fields, the file name and
the file's bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import IO, Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic.json_schema import SkipJsonSchema

from batchyard.core.engine import Engine
from batchyard.core.errors import IdempotencyConflict
from batchyard.core.models import BatchInfo, Idempotency
from batchyard.server.schemas import API_PREFIX, Batch

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

KeyHeader = Annotated[
    str | SkipJsonSchema[None],
    Header(alias=HEADER, min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",  # printable ASCII, no spaces
           description="Makes a retry safe: the same key with the same request answers with the batch the first "
                       "one created (200), with another request 409 idempotency_key_reused. Per tenant; kept "
                       "as long as the batch."),
]


def request_key(header: str | None, request: dict[str, Any], content_sha256: str | None = None) -> Idempotency | None:
    """The key with the hash of ``request`` (JSON-able, validated) and of an uploaded file's bytes."""
    if header is None:
        return None
    canonical = json.dumps({"request": request, "file_sha256": content_sha256}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False, default=str)
    return Idempotency(key=header, request_hash=hashlib.sha256(canonical.encode()).hexdigest())


def file_sha256(fh: IO[bytes]) -> str:
    """The SHA-256 of an upload, read from the start; the file is left at its start for the readers."""
    fh.seek(0)
    digest = hashlib.file_digest(fh, "sha256").hexdigest()
    fh.seek(0)
    return digest


def replayed(engine: Engine, tenant: str, key: Idempotency) -> JSONResponse | None:
    """The answer to a request whose key the tenant used already, or None for a new key.

    Checked before the input is read, so that a retried upload is not parsed again; raises
    ``IdempotencyConflict`` (409) when the key came with another request.
    """
    found = engine.store.find_idempotency_key(tenant, key.key)
    if found is None:
        return None
    return _answer(engine, key, IdempotencyConflict(key.key, found.batch_id, found.request_hash))


def raced(engine: Engine, key: Idempotency | None, exc: IdempotencyConflict) -> JSONResponse:
    """The answer when creating found the key taken meanwhile (a retry racing the first request)."""
    if key is None:  # not ours: cannot happen, but never swallow it
        raise exc
    return _answer(engine, key, exc)


def _answer(engine: Engine, key: Idempotency, used: IdempotencyConflict) -> JSONResponse:
    if used.request_hash != key.request_hash:
        raise used
    return _replay(engine.status(used.batch_id))


def _replay(info: BatchInfo) -> JSONResponse:
    return JSONResponse(Batch.model_validate(info.model_dump()).model_dump(mode="json"), status_code=200,
                        headers={"Location": f"{API_PREFIX}/batches/{info.batch_id}", REPLAYED_HEADER: "true"})
