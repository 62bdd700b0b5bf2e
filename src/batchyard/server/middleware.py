"""ASGI middleware that guards every request before a route sees it: a request id, a body size limit and
a JSON nesting limit (``io.nesting``).

Pure ASGI (no ``BaseHTTPMiddleware``): they run on every call, status polls included, so they add a few
microseconds and never buffer a response. Order, outermost first (``install``): ``RequestId`` (so that even a
413 carries the id), ``BodyLimit`` (before anything reads the body), ``JsonDepthLimit``.
"""

from __future__ import annotations

import random
import re
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from batchyard.io.nesting import MAX_JSON_DEPTH, json_too_deep, too_deep_message
from batchyard.server.errors import PayloadTooLarge, body, describe

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is reused (so a client or proxy can follow its own id through our log) when it is short
# and plain; anything else (a 10 kB header, control characters for log injection) is replaced.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")

Scope = dict[str, Any]


def _new_id() -> str:
    # Unique enough to find a log line, and nothing to guess: Python's generator, not the OS's random source
    # (a system call on the event loop for every request; 6% of the API's time under polling load).
    return f"{random.getrandbits(64):016x}"


def request_id_of(conn: HTTPConnection) -> str | None:
    """The id ``RequestId`` gave this request (None outside the middleware, e.g. in a bare test app)."""
    return conn.scope.get("state", {}).get("request_id")


class RequestId:
    """An ``X-Request-ID`` on every HTTP response: the client's own if sane, else a new random one.

    The id is kept in the request's state (``request_id_of``) for the error handler, which shows it in a 500's
    body and the server log line, so that a user's report can be matched to the traceback.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers") or () if k == b"x-request-id"), None)
        rid = given.decode() if given is not None and _SANE_ID.fullmatch(given) else _new_id()
        scope.setdefault("state", {})["request_id"] = rid  # the same dict Request.state reads
        header = (b"x-request-id", rid.encode())

        async def with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], header]
            await send(message)

        await self.app(scope, receive, with_id)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or as they stream.

    A refused body is never parsed: by Content-Length the answer comes before the body is read; a body sent
    without one (chunked) is counted as it arrives and cut off at the limit.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            _, content = describe(PayloadTooLarge(self.limit))
            await JSONResponse(content, status_code=413, headers={"Connection": "close"})(scope, receive, send)
            return
        seen, refused = 0, False

        async def counted() -> Any:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # answer 413 now; the app sees a client that went away
                    refused = True
                    _, content = describe(PayloadTooLarge(self.limit))
                    await JSONResponse(content, status_code=413, headers={"Connection": "close"})(scope, receive,
                                                                                                  send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not refused:
                raise


# -- JSON nesting ------------------------------------------------------------------------------------


def _is_json(scope: Scope) -> bool:
    ctype = next((v for k, v in scope.get("headers") or () if k == b"content-type"), b"")
    media = ctype.split(b";", 1)[0].strip().lower()
    # FastAPI parses a body without a content type as JSON too
    return not media or media == b"application/json" or media.endswith(b"+json")


class JsonDepthLimit:
    """422 for a JSON request body nested deeper than ``MAX_JSON_DEPTH``, before FastAPI parses it.

    Python's parser raises RecursionError on deep nesting, which FastAPI turns into a vague 400, and a
    payload just under the parser's limit would be stored and then fail every later read. The body is
    read here (FastAPI reads JSON bodies whole anyway; ``BodyLimit`` outside has bounded it) and handed
    on as one message.
    """

    def __init__(self, app: Any, limit: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away (or BodyLimit cut it off)
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        data = b"".join(chunks)
        if json_too_deep(data, self.limit):
            message = too_deep_message("the request body", self.limit)
            content = body("invalid_request", message, {"max_depth": self.limit})
            await JSONResponse(content, status_code=422)(scope, receive, send)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": data, "more_body": False}], receive), send)


def _replay(messages: list[Any], receive: Any) -> Any:
    """A ``receive`` that gives ``messages`` first, then whatever the real one gives (a disconnect)."""
    pending = list(messages)

    async def replay() -> Any:
        return pending.pop(0) if pending else await receive()

    return replay


def install(app: FastAPI, *, max_body_bytes: int) -> None:
    """Add the three, outermost first: RequestId, BodyLimit, JsonDepthLimit (Starlette wraps the last added
    outermost)."""
    app.add_middleware(JsonDepthLimit)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(RequestId)
