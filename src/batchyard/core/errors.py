"""The batchyard error tree.

    BatchyardError
    ├── ConfigError            bad settings, unknown store URL, processor module that fails to import
    ├── ProcessorNotFound      no processor registered under that name
    ├── InputError             bad input; carries every problem found (file, line, column, reason)
    ├── NotFound               no batch / item with that id
    ├── InvalidTransition      the state table forbids this change (the REST API answers 409)
    ├── IdempotencyConflict    the tenant already created a batch with this idempotency key
    ├── SchemaVersionError     the store's schema is newer or older than this code knows
    ├── StoreDamaged           the store's file is not a whole batchyard store (truncated, overwritten, foreign)
    └── StoreUnavailable       the store cannot take a write now (disk full, database unreachable): retry later

    PermanentError             raised *by processors*: fail the item now, do not retry
    RetryAfter                 raised *by processors*: retry no sooner than N seconds from now

HTTP status codes for these live in the server package, not here.
"""

from __future__ import annotations

from dataclasses import dataclass


class BatchyardError(Exception):
    """Base class of every error batchyard raises on purpose."""


class ConfigError(BatchyardError):
    pass


class ProcessorNotFound(BatchyardError):
    pass


class NotFound(BatchyardError):
    """No such batch or item; ``kind`` ("batch" or "item") and ``ident`` say which."""

    def __init__(self, message: str, *, kind: str | None = None, ident: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.ident = kind, ident


class InvalidTransition(BatchyardError):
    def __init__(self, kind: str, ident: str, current: str, action: str) -> None:
        self.kind, self.ident, self.current, self.action = kind, ident, current, action
        super().__init__(f"cannot {action} {kind} {ident}: it is {current}")


class SchemaVersionError(BatchyardError):
    pass


class StoreDamaged(BatchyardError):
    """The store is not a whole batchyard store: refused at start-up rather than silently made anew."""


class StoreUnavailable(BatchyardError):
    """The store cannot take a write now (disk full, database unreachable).

    Transient: workers keep their outcomes and try again (records are fenced, so a commit whose answer was
    lost with its connection is not counted twice); the REST API answers 503."""


class IdempotencyConflict(BatchyardError):
    """``Store.create_batch``: the tenant already used ``key``, for batch ``batch_id`` from a request that
    hashed to ``request_hash``; nothing was created. (The caller compares hashes: the same request is a retry
    to answer with that batch, another one a misuse of the key.)"""

    def __init__(self, key: str, batch_id: str, request_hash: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used, for batch {batch_id}")
        self.key, self.batch_id, self.request_hash = key, batch_id, request_hash


@dataclass(frozen=True)
class InputProblem:
    """One problem in an input: where it is and what was expected."""

    line: int | None
    reason: str
    column: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column:
            where.append(f"column {self.column!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason


class InputError(BatchyardError):
    """Bad input. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[InputProblem] | str) -> None:
        if isinstance(problems, str):
            problems = [InputProblem(line=None, reason=problems)]
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} input {noun}:\n{shown}{more}")


class PermanentError(Exception):
    """Raise from a processor to fail the item at once, without retries."""


class RetryAfter(Exception):
    """Raise from a processor to retry the item ``seconds`` from now rather than after the policy's backoff:
    the service said when (HTTP 429/503 ``Retry-After``). The attempt counts against ``max_attempts``."""

    def __init__(self, seconds: float, message: str | None = None) -> None:
        self.seconds = max(0.0, float(seconds))
        super().__init__(message or f"retry after {self.seconds:g}s")
