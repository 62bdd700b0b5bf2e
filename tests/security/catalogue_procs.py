"""Processors for the security catalogue (loaded with ``--processors``), beside tests/server/procs.py."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from batchyard import processor


class StrictParams(BaseModel):
    """A model that forbids what it does not declare: an unknown column or key is a row error."""

    model_config = ConfigDict(extra="forbid")
    name: str
    size: int = 0


@processor("strict", params=StrictParams, retry=1, description="Echo a row whose fields the model fixes.")
def strict(item, ctx):
    return {"name": item.params.name}


@processor("echo", retry=1, description="Return the payload as the result (for the CSV export cases).")
def echo(item, ctx):
    return {"value": item.payload}
