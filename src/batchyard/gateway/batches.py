"""OpenAI batches over batchyard batches: input files checked as OpenAI checks them, the status mapping, and
the output and error files written when a batch is final.

The mapping is derived from the batch's state, its shared params and its files, never stored apart:

=====================================  ==========================================================
batchyard                               OpenAI
=====================================  ==========================================================
pending                                 validating
running, paused                         in_progress
cancelling (by the user)                cancelling
cancelling (completion window ended)    finalizing
completed / failed / cancelled,         finalizing (until the output and error files are written),
                                        then completed / failed / cancelled or expired
input with errors (a batch of 0 items)  failed, with ``errors``
=====================================  ==========================================================

Output and error files get ids derived from the batch and the moment it ended, so two servers finalizing
the same batch write one file, and a batch retried through ``/api/v1`` gets new ones when it ends again.
The output file is written last: its existence says the batch is finalized.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from batchyard.core.engine import Engine
from batchyard.core.errors import NotFound
from batchyard.core.models import BatchInfo, BatchSpec, FileInfo, ItemInfo
from batchyard.core.states import BatchStatus
from batchyard.core.store import Store
from batchyard.gateway.config import GatewayConfig
from batchyard.gateway.models import ENDPOINTS, BatchErrorData, BatchErrors, BatchObject, RequestCounts, Usage
from batchyard.gateway.processor import ERROR_CODES
from batchyard.gateway.upstream import PROCESSOR

EXPIRED_REASON = "expired: the completion window ended"
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
CANCELLED_MESSAGE = "This request was cancelled before it was executed."
MAX_REPORTED_ERRORS = 1000  # errors listed in a failed batch's ``errors``
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SPOOL = 16 << 20


class LineError(Exception):
    """An input file that OpenAI would refuse: what, where (1-based line) and which field."""

    def __init__(self, message: str, line: int | None = None, param: str | None = None,
                 code: str = "invalid_request") -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line, self.param, self.code = line, param, code


def window_seconds(window: str) -> float:
    m = _WINDOW.match(window)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"completion_window {window!r}: expected 24h (or any NUMBER followed by s, m, h or d)")
    return float(m.group(1)) * _UNIT[m.group(2)]


# -- input files --------------------------------------------------------------------------------


def iter_lines(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a JSONL byte stream, blank lines skipped, however the chunks cut it."""
    rest = b""
    number = 0
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            number += 1
            if line.strip():
                yield number, line
    if rest.strip():
        yield number + 1, rest


def check_line(number: int, raw: bytes, seen: set[str], endpoint: str | None) -> tuple[str, dict[str, Any]]:
    """One request line as OpenAI checks it: (custom_id, the request), or ``LineError``."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LineError(f"not valid JSON: {exc}", number, code="invalid_json_line") from None
    if not isinstance(obj, dict):
        raise LineError("expected a JSON object", number, code="invalid_json_line")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError("custom_id must be a non-empty string", number, "custom_id", "missing_required_parameter")
    if custom_id in seen:
        raise LineError(f"duplicate custom_id {custom_id!r}: custom_id must be unique within a batch", number,
                        "custom_id", "duplicate_custom_id")
    if obj.get("method") != "POST":
        raise LineError(f"method must be POST, got {obj.get('method')!r}", number, "method", "invalid_method")
    url = obj.get("url")
    if endpoint is not None and url != endpoint:
        raise LineError(f"url {url!r} does not match the batch's endpoint {endpoint!r}", number, "url",
                        "mismatched_url")
    if url not in ENDPOINTS:
        raise LineError(f"url must be one of {', '.join(ENDPOINTS)}, got {url!r}", number, "url", "invalid_url")
    if not isinstance(obj.get("body"), dict):
        raise LineError("body must be a JSON object", number, "body", "invalid_body")
    extra = set(obj) - {"custom_id", "method", "url", "body"}
    if extra:
        raise LineError(f"unexpected field {sorted(extra)[0]!r}", number, sorted(extra)[0], "invalid_request")
    seen.add(custom_id)
    return custom_id, obj


def check_file(chunks: Iterator[bytes], config: GatewayConfig, endpoint: str | None = None,
               first_only: bool = True) -> list[LineError]:
    """Every problem of an input file (the first only, at upload), within the configured line limit."""
    problems: list[LineError] = []
    seen: set[str] = set()
    n = 0
    for number, raw in iter_lines(chunks):
        n += 1
        if n > config.max_lines:
            problems.append(LineError(f"more than {config.max_lines} requests in one file", number,
                                      code="too_many_requests_in_file"))
            break
        try:
            check_line(number, raw, seen, endpoint)
        except LineError as exc:
            problems.append(exc)
            if first_only or len(problems) >= MAX_REPORTED_ERRORS:
                break
    if n == 0 and not problems:
        problems.append(LineError("the file has no requests", code="empty_file"))
    return problems


def rows_of(store: Store, file_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(custom_id, request) of a checked input file: the batch's items, streamed into the store."""
    seen: set[str] = set()
    for number, raw in iter_lines(store.file_content(file_id)):
        yield check_line(number, raw, seen, None)


def new_spec(info: FileInfo, endpoint: str, window: str, metadata: dict[str, str] | None, tenant: str,
             config: GatewayConfig, errors: list[LineError]) -> BatchSpec:
    params: dict[str, Any] = {
        "endpoint": endpoint, "input_file_id": info.file_id, "completion_window": window,
        "expires_at": time.time() + window_seconds(window), "metadata": metadata}
    if errors:
        params["errors"] = [{"code": e.code, "message": str(e), "param": e.param, "line": e.line} for e in errors]
    return BatchSpec(processor=PROCESSOR, params=params, parallel=config.concurrency, tenant=tenant,
                     description=(metadata or {}).get("description") or f"OpenAI batch of {info.filename}",
                     tags=["openai"], source=f"file:{info.file_id}", max_attempts=10)


def is_gateway_batch(info: BatchInfo) -> bool:
    return info.processor == PROCESSOR and "endpoint" in info.params


# -- the status mapping ------------------------------------------------------------------------


def _ts(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def output_ids(info: BatchInfo) -> tuple[str, str]:
    """(output file id, error file id) of a final batch: derived from the batch and when it ended."""
    ended = info.completed_at.timestamp() if info.completed_at else ""
    out, err = (hashlib.sha256(f"{info.batch_id}|{ended}|{kind}".encode()).hexdigest()[:24]
                for kind in ("output", "error"))
    return f"file-{out}", f"file-{err}"


def produced(store: Store, info: BatchInfo) -> tuple[FileInfo | None, FileInfo | None]:
    """The output and error files of a final batch, if written."""
    if not info.is_final or info.items_total == 0:
        return None, None
    found: list[FileInfo | None] = []
    for fid in output_ids(info):
        try:
            found.append(store.get_file(fid))
        except NotFound:
            found.append(None)
    return found[0], found[1]


def expired(info: BatchInfo) -> bool:
    return (info.status_reason or "").startswith(EXPIRED_REASON)


def openai_status(info: BatchInfo, finalized: bool) -> str:
    s = info.status
    if info.params.get("errors"):
        return "validating" if s == BatchStatus.PENDING else "failed"
    if s == BatchStatus.PENDING:
        return "validating"
    if s in (BatchStatus.RUNNING, BatchStatus.PAUSED):
        return "in_progress"
    if s == BatchStatus.CANCELLING:
        return "finalizing" if expired(info) else "cancelling"
    if not finalized:
        return "finalizing" if s != BatchStatus.CANCELLED or expired(info) else "cancelling"
    if s == BatchStatus.CANCELLED:
        return "expired" if expired(info) else "cancelled"
    return "completed" if s == BatchStatus.COMPLETED else "failed"


def usage_from(totals: dict[str, float]) -> Usage:
    return Usage.model_validate({
        "input_tokens": int(totals.get("input_tokens", 0)), "output_tokens": int(totals.get("output_tokens", 0)),
        "total_tokens": int(totals.get("total_tokens", 0)),
        "input_tokens_details": {"cached_tokens": int(totals.get("cached_tokens", 0))},
        "output_tokens_details": {"reasoning_tokens": int(totals.get("reasoning_tokens", 0))}})


LIVE_TOTALS_SECONDS = 5.0  # how stale a running batch's usage may be: summing it scans the results
_live: dict[str, tuple[float, dict[str, float]]] = {}


def live_totals(store: Store, info: BatchInfo) -> dict[str, float]:
    """Usage and synchronous cost summed over the results so far (one aggregate query in the store, which
    scans the results: about 0.4 s for 10,000, so a batch polled often is summed at most every few seconds)."""
    cached = _live.get(info.batch_id)
    if cached is not None and time.monotonic() - cached[0] < LIVE_TOTALS_SECONDS:
        return cached[1]
    stats = store.result_stats(info.batch_id)
    out = {k.split(".", 1)[1]: v["sum"] for k, v in stats.items() if k.startswith("usage.")}
    out["sync_cost"] = stats.get("sync_cost", {}).get("sum", 0.0)
    if len(_live) > 1000:  # forget batches nobody polls any more
        _live.clear()
    _live[info.batch_id] = (time.monotonic(), out)
    return out


def to_openai(store: Store, info: BatchInfo, upstream: dict[str, Any] | None = None,
              with_usage: bool = True) -> BatchObject:
    p = info.params
    out_file, err_file = produced(store, info)
    finalized = info.is_final and (info.items_total == 0 or out_file is not None)
    status = openai_status(info, finalized)
    final_at = _ts(info.completed_at)
    done_at = _ts(out_file.created_at) if out_file else final_at
    totals: dict[str, float] | None = None
    if out_file is not None:
        totals = out_file.meta.get("totals") or {}
    elif with_usage and info.items_succeeded:
        totals = live_totals(store, info)
    errors = p.get("errors")
    failed = info.items_failed + (info.items_cancelled if info.is_final else 0)
    sync_cost = (totals or {}).get("sync_cost", 0.0)
    return BatchObject(
        id=info.batch_id, endpoint=p.get("endpoint", ""), input_file_id=p.get("input_file_id", ""),
        completion_window=p.get("completion_window", "24h"), status=status,  # type: ignore[arg-type]
        errors=BatchErrors(data=[BatchErrorData.model_validate(e) for e in errors]) if errors else None,
        output_file_id=out_file.file_id if out_file else None, error_file_id=err_file.file_id if err_file else None,
        created_at=int(info.created_at.timestamp()), in_progress_at=_ts(info.started_at) if not errors else None,
        expires_at=int(p["expires_at"]) if p.get("expires_at") else None,
        finalizing_at=final_at if info.is_final else _ts(info.updated_at) if status == "finalizing" else None,
        completed_at=done_at if status == "completed" else None,
        failed_at=(done_at or _ts(info.created_at)) if status == "failed" else None,
        expired_at=final_at if status == "expired" else None,
        cancelling_at=_ts(info.updated_at) if status == "cancelling" else final_at if status == "cancelled" else None,
        cancelled_at=done_at if status == "cancelled" else None,
        request_counts=RequestCounts(total=info.items_total, completed=info.items_succeeded, failed=failed),
        metadata=p.get("metadata"), usage=usage_from(totals) if totals is not None else None,
        batchyard={"status": info.status.value, "pause_reason": info.pause_reason,
                   "status_reason": info.status_reason, "items_pending": info.items_pending,
                   "items_running": info.items_running, "attempts": info.attempts_total,
                   "cost": {"batch": round(info.cost_total, 8), "synchronous": round(sync_cost, 8),
                            "saved": round(sync_cost - info.cost_total, 8), "unit": info.cost_unit},
                   "upstream": upstream or {}})


# -- output and error files ----------------------------------------------------------------------


def _line_id(batch_id: str, custom_id: str) -> str:
    digest = hashlib.sha256(f"{batch_id}|{custom_id}".encode()).hexdigest()[:24]
    return f"batch_req_{digest}"


def output_line(it: ItemInfo, was_expired: bool) -> tuple[bool, dict[str, Any]]:
    """(is it a success, OpenAI's line for the item)."""
    payload = it.payload if isinstance(it.payload, dict) else {}
    custom_id = payload.get("custom_id", it.item_id)
    line: dict[str, Any] = {"id": _line_id(it.batch_id, custom_id), "custom_id": custom_id, "response": None,
                            "error": None}
    result = it.result if isinstance(it.result, dict) else None
    if result is not None and "status_code" in result:
        line["response"] = {"status_code": result["status_code"], "request_id": result.get("request_id"),
                            "body": result.get("body")}
    status = it.status.value
    if status == "succeeded":
        return True, line
    if status == "cancelled":
        line["error"] = {"code": "batch_expired", "message": EXPIRED_MESSAGE} if was_expired else \
            {"code": "batch_cancelled", "message": CANCELLED_MESSAGE}
    elif it.error is not None and not (it.error.type == "UpstreamRejected" and line["response"]):
        # A 4xx the upstream answered is a response, as OpenAI writes it; anything else is an error.
        line["error"] = {"code": ERROR_CODES.get(it.error.type, "server_error"), "message": it.error.message}
    elif it.error is None:
        line["error"] = {"code": "server_error", "message": f"the request ended {status}"}
    return False, line


_finalizing: dict[str, threading.Lock] = {}
_finalizing_lock = threading.Lock()


def finalize(store: Store, info: BatchInfo) -> tuple[FileInfo | None, FileInfo | None]:
    """Write the output and error files of a final batch (once; a no-op when they exist)."""
    out_file, err_file = produced(store, info)
    if not info.is_final or info.items_total == 0 or out_file is not None:
        return out_file, err_file
    with _finalizing_lock:
        lock = _finalizing.setdefault(info.batch_id, threading.Lock())
    with lock:
        out_file, err_file = produced(store, info)
        if out_file is None:
            out_file, err_file = _write_files(store, info)
    with _finalizing_lock:
        _finalizing.pop(info.batch_id, None)
    return out_file, err_file


def _write_files(store: Store, info: BatchInfo) -> tuple[FileInfo, FileInfo | None]:
    out_id, err_id = output_ids(info)
    was_expired = expired(info)
    totals: dict[str, float] = {}
    counts = {"output": 0, "error": 0}
    with tempfile.SpooledTemporaryFile(_SPOOL) as out, tempfile.SpooledTemporaryFile(_SPOOL) as err:
        for it in store.iter_items(info.batch_id):
            ok, line = output_line(it, was_expired)
            target: IO[bytes] = out if ok else err  # type: ignore[assignment]
            target.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
            counts["output" if ok else "error"] += 1
            if ok and isinstance(it.result, dict):
                for k, v in (it.result.get("usage") or {}).items():
                    totals[k] = totals.get(k, 0) + v
                totals["sync_cost"] = totals.get("sync_cost", 0.0) + float(it.result.get("sync_cost") or 0.0)
        meta = {"batch_id": info.batch_id, "lines": counts, "totals": totals}
        err_file = None
        if counts["error"]:
            err.seek(0)
            err_file = store.add_file(info.tenant, "batch_output", f"{info.batch_id}_error.jsonl", err,
                                      file_id=err_id, meta=meta)
        out.seek(0)  # last: its existence marks the batch finalized
        out_file = store.add_file(info.tenant, "batch_output", f"{info.batch_id}_output.jsonl", out, file_id=out_id,
                                  meta=meta)
    return out_file, err_file


# -- expiry and start-up -----------------------------------------------------------------------


def expire_if_due(engine: Engine, info: BatchInfo, now: float | None = None) -> BatchInfo:
    """Cancel a batch whose completion window has ended: what is not done is expired (``batch_expired``)."""
    deadline = info.params.get("expires_at")
    if info.is_final or info.status == BatchStatus.CANCELLING or deadline is None:
        return info
    if (now if now is not None else time.time()) < float(deadline):
        return info
    try:
        return engine.store.transition(info.batch_id, "cancel", EXPIRED_REASON)
    except Exception:  # ended or changed meanwhile: read it again
        return engine.status(info.batch_id)


def settle(engine: Engine, info: BatchInfo) -> BatchInfo:
    """What a read of a gateway batch does first: expire it if due, finalize it if final."""
    info = expire_if_due(engine, info)
    if info.is_final:
        finalize(engine.store, info)
    return info
