"""Failpoints: crash this process at a named step, for the fault tests.

``BATCHYARD_FAILPOINT=NAME`` (or ``NAME:N``, the N-th time that step is reached) makes the process leave
with ``os._exit(EXIT_CODE)`` at that step: no ``finally``, no flush, no unregistering, like ``kill -9``
there. The steps, in the order an item meets them:

* ``after_claim``: the worker's claim transaction committed; no item of it has started.
* ``after_processor``: a processor returned (or raised); its outcome is not recorded yet.
* ``mid_commit``: inside a group commit, between the statement that records the items and the ones
  that follow (counters, statistics); the transaction never commits.
* ``after_commit``: a group commit returned.

The variable is read once, at import. Unset, ``hit`` is a function that returns at once, and the per-item
call sites test the module-level ``ARMED`` first, so the hot path pays one local boolean test.
"""

from __future__ import annotations

import os
import sys
import threading

STEPS = ("after_claim", "after_processor", "mid_commit", "after_commit")
EXIT_CODE = 86  # distinct from batchyard's own exit codes (0, 1, 2, 130), so a test knows who exited


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    if name not in STEPS:
        raise ValueError(f"BATCHYARD_FAILPOINT={spec!r}: expected one of {', '.join(STEPS)}, optionally :N")
    count = int(nth) if nth else 1
    if count < 1:
        raise ValueError(f"BATCHYARD_FAILPOINT={spec!r}: N counts from 1")
    return name, count


_SPEC = _parse(os.environ.get("BATCHYARD_FAILPOINT", "").strip())
ARMED: str | None = _SPEC[0] if _SPEC else None  # the armed step's name; None in every normal run
_left = _SPEC[1] if _SPEC else 0
_lock = threading.Lock()


def armed(name: str) -> bool:
    """Whether ``hit(name)`` can crash this process (bind it to a local before a per-item loop)."""
    return name == ARMED


def hit(name: str) -> None:
    """Leave the process at once if ``name`` is the armed step and this is the N-th time it is reached."""
    global _left
    if name != ARMED:
        return
    with _lock:  # lanes are threads: exactly one of them is the N-th
        _left -= 1
        if _left != 0:
            return
    sys.stderr.write(f"batchyard: failpoint {name} hit: exiting with code {EXIT_CODE}\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)
