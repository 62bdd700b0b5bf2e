"""The ``record`` processor for the multi-worker tests: every run of an item leaves two lines in its
process's own file, so the tests can check from outside the store what actually ran, where and when.

``S,batch,item,start,pid`` is written (unbuffered, one ``write`` on an O_APPEND file: a ``kill -9`` loses no
line that was written) before the work, ``E,batch,item,end,pid,start`` after it. The files are
``$BATCHYARD_TEST_RECORD_DIR/<pid>.log``. Loaded by ``batchyard worker --processors``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel

from batchyard import Context, Item, processor


class RecordParams(BaseModel):
    ms: float = 0.0  # how long each item takes


_fd: int | None = None


def _write(line: str) -> None:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["BATCHYARD_TEST_RECORD_DIR"], f"{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, line.encode())


@processor("record", params=RecordParams, description="Sleep `ms`, recording start and end to this process's file.")
def record(item: Item, ctx: Context) -> dict[str, Any]:
    pid = os.getpid()
    start = time.time()
    _write(f"S,{ctx.batch_id},{item.id},{start:.6f},{pid}\n")
    if item.params.ms:
        time.sleep(item.params.ms / 1000)
    end = time.time()
    _write(f"E,{ctx.batch_id},{item.id},{end:.6f},{pid},{start:.6f}\n")
    return {"pid": pid, "start": round(start, 6)}
