"""What the client raises: the server's error code and message, as typed exceptions.

    BatchyardError
    └── ApiError                 any error answer; .status_code, .code, .message, .details
        ├── BadRequestError      400
        ├── UnauthorizedError    401: no API key, or one the server does not know
        ├── ForbiddenError       403: the key may not do this; an unsafe processor; input_uri off on the server
        ├── NotFoundError        404; also a ``batchyard.NotFound``, as local lookups raise
        ├── ConflictError        409: the batch's state does not allow the action
        ├── PayloadTooLargeError 413
        ├── InvalidRequestError  422: bad request or bad input; .details lists every problem with its line
        ├── RateLimitedError     429; .retry_after: seconds to wait, from the Retry-After header (or None)
        └── ServerError          5xx
    ConnectionFailed            the server could not be reached (a BatchyardError too); .url, .reason
"""

from __future__ import annotations

from typing import Any

import httpx

from batchyard.core.errors import BatchyardError, NotFound
from batchyard.core.retry import retry_after_seconds


class ApiError(BatchyardError):
    def __init__(self, status_code: int, code: str, message: str, details: Any = None) -> None:
        self.status_code, self.code, self.message, self.details = status_code, code, message, details
        super().__init__(f"{code}: {message}")


class BadRequestError(ApiError):
    pass


class UnauthorizedError(ApiError):
    pass


class ForbiddenError(ApiError):
    pass


class NotFoundError(ApiError, NotFound):
    pass


class ConflictError(ApiError):
    pass


class PayloadTooLargeError(ApiError):
    pass


class InvalidRequestError(ApiError):
    pass


class RateLimitedError(ApiError):
    def __init__(self, status_code: int, code: str, message: str, details: Any = None,
                 retry_after: float | None = None) -> None:
        super().__init__(status_code, code, message, details)
        self.retry_after = retry_after


class ServerError(ApiError):
    pass


class ConnectionFailed(BatchyardError):
    def __init__(self, url: str, reason: object) -> None:
        self.url, self.reason = url, str(reason)
        super().__init__(f"cannot reach {url}: {self.reason}")


_BY_STATUS: dict[int, type[ApiError]] = {400: BadRequestError, 401: UnauthorizedError, 403: ForbiddenError,
                                         404: NotFoundError, 409: ConflictError, 413: PayloadTooLargeError,
                                         422: InvalidRequestError, 429: RateLimitedError}


def from_response(response: httpx.Response) -> ApiError:
    """The exception for an error answer (its body read), from the server's one error shape."""
    try:
        err = response.json()["error"]
        code, message, details = str(err["code"]), str(err["message"]), err.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = f"http_{response.status_code}", response.text[:500] or response.reason_phrase, None
    cls = _BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else ApiError)
    if cls is RateLimitedError:
        return RateLimitedError(response.status_code, code, message, details,
                                retry_after=retry_after_seconds(response.headers.get("Retry-After")))
    return cls(response.status_code, code, message, details)

