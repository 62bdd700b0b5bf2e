"""The batch commands against a batchyard server (``--url`` / ``BATCHYARD_URL``), through ``batchyard.Client``.

``RemoteBackend`` answers what ``main.LocalBackend`` answers from the local store, so every command is written
once in ``main`` and prints the same output whichever it talks to. Imported only when a URL is given: the
HTTP client costs start-up time that local commands should not pay.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import IO, Any

from batchyard.cli.main import (
    EXIT_FAILED,
    EXIT_USAGE,
    err,
    fail,
    fail_problems,
    out,
    print_control,
    print_problems,
    watch_with_progress,
)
from batchyard.client import ApiError, Client, ConnectionFailed, RateLimitedError
from batchyard.core.errors import InputProblem
from batchyard.core.models import BatchInfo, Priority
from batchyard.io.inputs import detect_format
from batchyard.server.schemas import Batch, ValidationReport

PAGE = 1000  # the server's largest page of batches


def _info(batch: Batch) -> BatchInfo:
    """A ``Batch`` answer as the plain ``BatchInfo`` the local store gives (``--json`` prints the same keys)."""
    return BatchInfo.model_validate(batch.model_dump(exclude={"items"}))


def _problems(details: Any) -> list[InputProblem]:
    """The input problems an error carries in its details (invalid input, invalid request), if any."""
    if not isinstance(details, list):
        return []
    return [InputProblem(line=d.get("line"), reason=str(d["reason"]), column=d.get("column"), source=d.get("source"))
            for d in details if isinstance(d, dict) and "reason" in d]


def _exit_code(exc: ApiError) -> int:
    # As locally: a conflict with the batch's state is 1 (like InvalidTransition), and so is anything the
    # server could not do (rate limit, 5xx); any other 4xx means the command was wrong (id, input, key): 2.
    if exc.status_code in (409, 429) or exc.status_code >= 500:
        return EXIT_FAILED
    return EXIT_USAGE


class RemoteBackend:
    """The batch commands on a server: ``main.Backend`` over ``batchyard.Client``."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url
        self.client = Client(url, api_key=api_key)

    def close(self) -> None:
        self.client.close()

    @contextmanager
    def _calling(self) -> Iterator[None]:
        """The server's errors as its code and message on one line, with an exit code; never a traceback."""
        try:
            yield
        except ConnectionFailed as exc:
            fail(str(exc))
        except ApiError as exc:
            print_problems(_problems(exc.details))
            wait = f" (retry after {exc.retry_after:g}s)" \
                if isinstance(exc, RateLimitedError) and exc.retry_after is not None else ""
            fail(f"{exc}{wait}", _exit_code(exc))

    def batch(self, batch_id: str | None) -> BatchInfo:
        with self._calling():
            if batch_id:
                return _info(self.client.get_batch(batch_id))
            latest = self.client.list_batches(limit=1).batches
        if not latest:
            fail(f"no batches on {self.url} yet")
        return latest[0]

    def batches(self, status: str | None, processor: str | None, limit: int) -> list[BatchInfo]:
        with self._calling():
            return list(islice(self.client.iter_batches(status=status, processor=processor,
                                                        limit=min(limit, PAGE)), limit))

    def control(self, action: str, batch_id: str) -> BatchInfo:
        with self._calling():
            return _info(getattr(self.client, action)(batch_id))

    def set_budget(self, batch_id: str, budget: float | None) -> BatchInfo:
        with self._calling():
            return _info(self.client.set_budget(batch_id, budget, resume=False))

    def run(self, info: BatchInfo) -> BatchInfo:
        return self.watch(info)  # the server's workers run it; here we follow

    def watch(self, info: BatchInfo) -> BatchInfo:
        def follow(on_progress: Callable[[BatchInfo], None]) -> BatchInfo:
            with self._calling():
                return self.client.wait(info.batch_id, on_progress=on_progress)

        return watch_with_progress(info, follow)

    def export(self, info: BatchInfo, out: IO[bytes], fmt: str, errors_only: bool) -> int:
        with self._calling():
            for chunk in self.client.iter_results(info.batch_id, format=fmt, errors_only=errors_only):
                out.write(chunk)
        # The stream does not say how many items it held; the counters do: exactly, once the batch is final
        # (every item is then in the export); while it runs, the items done when it was read.
        if errors_only:
            return info.items_failed
        return info.items_succeeded + info.items_failed + info.items_cancelled

    def submit(self, input: str, processor: str, *, params: dict[str, Any], parallel: int, priority: Priority,
               tags: list[str], description: str | None, max_failures: int | None,
               max_failure_rate: float | None, input_format: str | None, start: bool,
               dry_run: bool) -> BatchInfo | None:
        """Upload ``input`` (a file, or - for stdin) as a new batch and say what was created; None on a dry run."""
        name = "stdin" if input == "-" else Path(input).name
        if input != "-" and not Path(input).is_file():
            fail(f"{input}: not a file; submit uploads one CSV, JSONL, JSON or text file "
                 "(`batchyard run` reads directories, globs and URIs)")
        with self._calling():
            made = self.client.upload(
                sys.stdin.buffer if input == "-" else input, processor, filename=name, input_format=input_format,
                params=params, parallel_jobs=parallel, priority=priority.value, max_failures=max_failures,
                max_failure_rate=max_failure_rate, description=description, tags=tags, start=start,
                dry_run=dry_run)
        if isinstance(made, ValidationReport):
            self._dry_run(made, input, name, input_format)
            return None
        info = _info(made)
        err.print(f"created {info.batch_id}: {info.items_total} items", highlight=False)
        print_control(info)
        return info

    @staticmethod
    def _dry_run(report: ValidationReport, input: str, name: str, input_format: str | None) -> None:
        if not report.valid:
            fail_problems(_problems([p.model_dump() for p in report.problems]), input)
        fmt = input_format or detect_format(name) or "text"
        out.print(f"dry run: {report.items} items from {name} ({fmt}) would run through {report.processor!r}; "
                  "nothing was created", highlight=False)
