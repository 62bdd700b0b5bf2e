"""A mounted adapter with a route that fails: the catalogue's 500 (a request id, no trace, nothing changed)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()


@router.get("/boom")
def boom() -> None:
    raise RuntimeError("database password is hunter2; see /etc/batchyard/secret.conf")
