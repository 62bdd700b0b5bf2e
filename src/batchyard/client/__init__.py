"""The Python client of a batchyard server: ``Client`` and ``AsyncClient`` (httpx).

It shares the request and response schemas with the server (``batchyard.server.schemas``) and nothing
else, so it needs neither FastAPI nor a store.
"""

from batchyard.client._async import AsyncClient
from batchyard.client._calls import OPERATIONS, StreamEvent
from batchyard.client._sync import Client
from batchyard.client.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    ConnectionFailed,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
)

__all__ = [
    "OPERATIONS",
    "ApiError",
    "AsyncClient",
    "BadRequestError",
    "Client",
    "ConflictError",
    "ConnectionFailed",
    "ForbiddenError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServerError",
    "StreamEvent",
    "UnauthorizedError",
]
