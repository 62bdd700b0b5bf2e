"""Errors to HTTP, in one table, and one error shape everywhere:

    {"error": {"code": "batch_not_found", "message": "...", "details": ...}}

``ERRORS`` maps batchyard's error tree (``core.errors``) and the server's own errors to a status and a
code; the most specific class wins. FastAPI's request validation errors and Starlette's HTTP errors
(unknown route, wrong method) are reshaped the same way.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from batchyard.core.errors import (
    BatchyardError,
    ConfigError,
    IdempotencyConflict,
    InputError,
    InputProblem,
    InvalidTransition,
    NotFound,
    ProcessorNotFound,
    SchemaVersionError,
    StoreDamaged,
    StoreUnavailable,
)
from batchyard.core.states import BATCH_ACTIONS, FINAL_BATCH
from batchyard.server.schemas import ErrorResponse, Problem

log = logging.getLogger("batchyard.server")


class ProcessorNotAllowed(BatchyardError):
    """The processor runs arbitrary commands; this server was not started with --allow-unsafe-processors."""


class InputUriNotAllowed(BatchyardError):
    """An ``input_uri`` of a kind the server does not read (``memory://``, ``ftp://``, chained URLs...)."""


class UrlNotAllowed(BatchyardError):
    """A URL the server will not fetch: not http(s), unresolvable, or on a private address (SSRF guard)."""

    def __init__(self, message: str, *, url: str | None = None, host: str | None = None,
                 address: str | None = None) -> None:
        super().__init__(message)
        self.url, self.host, self.address = url, host, address


class InvalidUrl(UrlNotAllowed):
    """A URL that is malformed, not a refused one: not http(s), no host, a bad port, or a host written as an
    IP address that is no address (``999.1.1.1``). 422, where a well-formed URL the guard refuses is 403."""


class PathNotAllowed(BatchyardError):
    """A local path outside the server's data roots (``--data-root``), or any path on a server without them.

    ``problems`` locate the refused values in an input (line or item, column), as ``InputError``'s do.
    """

    def __init__(self, message: str, *, path: str | None = None, problems: list[InputProblem] | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.problems = problems or []


class InvalidPath(PathNotAllowed):
    """A value that is no path on any system (a NUL byte): 422, where a path outside the data roots is 403."""


class MissingApiKey(BatchyardError):
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class InvalidApiKey(BatchyardError):
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class TenantLimit(BatchyardError):
    """The tenant has as many items queued as this server allows it."""

    def __init__(self, message: str, retry_after: int, limit: int, queued: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}
        self.details = {"limit": limit, "queued": queued, "retry_after_s": retry_after}


class PayloadTooLarge(BatchyardError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body larger than the limit of {limit} bytes (BATCHYARD_MAX_UPLOAD_BYTES)")


# (error class, HTTP status, code); checked most specific first via the MRO.
ERRORS: list[tuple[type[BaseException], int, str]] = [
    (NotFound, 404, "not_found"),  # refined to batch_not_found / item_not_found below
    (ProcessorNotFound, 422, "processor_not_found"),  # a request's processor field names none: a bad value
    (ProcessorNotAllowed, 403, "processor_not_allowed"),
    (InputUriNotAllowed, 403, "input_uri_not_allowed"),
    # 403: well-formed, but this server will not fetch or read it (policy); 422: malformed (see README)
    (InvalidUrl, 422, "invalid_url"),
    (UrlNotAllowed, 403, "url_not_allowed"),
    (InvalidPath, 422, "invalid_path"),
    (PathNotAllowed, 403, "path_not_allowed"),
    (InvalidTransition, 409, "invalid_transition"),
    (IdempotencyConflict, 409, "idempotency_key_reused"),  # answered only when the request differs
    (InputError, 422, "invalid_input"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (MissingApiKey, 401, "unauthorized"),
    (InvalidApiKey, 401, "invalid_api_key"),
    (TenantLimit, 429, "tenant_limit"),
    (ConfigError, 400, "config_error"),
    (SchemaVersionError, 503, "store_schema_mismatch"),
    (StoreUnavailable, 503, "store_unavailable"),  # a full disk, the database restarting: retry later
    (StoreDamaged, 500, "store_damaged"),
    (BatchyardError, 400, "bad_request"),
]
_BY_CLASS = {cls: (status, code) for cls, status, code in ERRORS}
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 422: "invalid_request",
              429: "too_many_requests", 500: "internal_error", 503: "unavailable"}

# For OpenAPI: the error responses an operation may give.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": desc}
    for status, desc in [(400, "Bad request"), (401, "No API key, or one that is not valid"),
                         (404, "Batch, item or processor not found"), (429, "The tenant's queue is full"),
                         (409, "The batch's state does not allow this"), (422, "Invalid request or input")]
}


def lookup(exc: BaseException) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in _BY_CLASS:
            return _BY_CLASS[cls]
    return 500, "internal_error"


def body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def problems(exc: InputError | PathNotAllowed) -> list[dict[str, Any]]:
    return [Problem(line=p.line, column=p.column, reason=p.reason, source=p.source).model_dump() for p in exc.problems]


def describe(exc: BatchyardError) -> tuple[int, dict[str, Any]]:
    """The status and error body for one of batchyard's errors."""
    status, code = lookup(exc)
    message, details = str(exc), None
    if isinstance(exc, NotFound):
        code = f"{exc.kind}_not_found" if exc.kind else code
    elif isinstance(exc, InvalidTransition):
        allowed = sorted(FINAL_BATCH) if exc.action == "delete" else \
            sorted(BATCH_ACTIONS[exc.action][0]) if exc.action in BATCH_ACTIONS else []
        message = f"{exc}; {exc.action} is allowed only when the {exc.kind} is {' or '.join(allowed)}"
        details = {"current": exc.current, "action": exc.action, "allowed_from": allowed}
    elif isinstance(exc, InputError):
        details = problems(exc)
        message = f"{len(exc.problems)} input problem{'s' if len(exc.problems) != 1 else ''}; see details"
    elif isinstance(exc, UrlNotAllowed):
        details = {"url": exc.url, "host": exc.host, "address": exc.address}
    elif isinstance(exc, PathNotAllowed):
        details = problems(exc) if exc.problems else [Problem(reason=str(exc), column=None).model_dump()]
    elif isinstance(exc, IdempotencyConflict):
        message = (f"Idempotency-Key {exc.key!r} was already used for another request (which created batch "
                   f"{exc.batch_id}); use a new key for a new request")
        details = {"idempotency_key": exc.key, "batch_id": exc.batch_id}
    elif isinstance(exc, PayloadTooLarge):
        details = {"limit_bytes": exc.limit}
    elif isinstance(exc, TenantLimit):
        details = exc.details
    return status, body(code, message, details)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""

    async def batchyard_error(request: Request, exc: Exception) -> JSONResponse:
        status, content = describe(exc)  # type: ignore[arg-type]
        return JSONResponse(content, status_code=status, headers=getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        found = [Problem(column=".".join(str(p) for p in e.get("loc", ())), reason=e.get("msg", "invalid"))
                 .model_dump() for e in exc.errors()]
        noun = "problem" if len(found) == 1 else "problems"
        return JSONResponse(body("invalid_request", f"{len(found)} {noun} in the request; see details", found),
                            status_code=422)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette calls this from its outermost middleware, outside RequestId's send: set the header here.
        # No traceback or exception text in the body: it may name files, queries or secrets.
        rid = getattr(request.state, "request_id", None) or "-"
        log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path, rid, exc_info=exc)
        return JSONResponse(body("internal_error", f"internal server error; see the server log for request {rid}",
                                 {"request_id": rid}), status_code=500, headers={"X-Request-ID": rid})

    app.add_exception_handler(BatchyardError, batchyard_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)

