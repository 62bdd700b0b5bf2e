"""API keys: who is calling, and so which tenant's batches they see.

Keys come from ``BATCHYARD_API_KEYS`` (``key`` or ``tenant:key``, comma-separated) and from the store
(``batchyard keys create``; only a SHA-256 of each key is kept: keys are 32 random bytes, so a slow
password hash would add nothing). Once any key is configured, every API call needs
``Authorization: Bearer <key>``; without keys the server has one tenant, ``default``, and binds to
loopback only. ``/health``, ``/metrics`` and the OpenAPI docs stay open, like most services' probes.

Every API call is authenticated, status polls included, so the check stays on the event loop when it can:
keys from the environment and store keys seen in the last ``CHECK_SECONDS`` are answered from memory (a
revoked key is refused within that time, as the README says); only a key not seen lately goes to the store,
in a thread.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from batchyard.core.errors import ConfigError
from batchyard.core.models import DEFAULT_TENANT, ApiKeyInfo
from batchyard.core.store import Store
from batchyard.server.errors import InvalidApiKey, MissingApiKey

KEY_PREFIX = "by_"
CHECK_SECONDS = 2.0  # how stale "does the store hold any key?" may be (keys created while serving)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, key): the id names the key in lists; the key itself is shown once."""
    return f"key_{secrets.token_hex(6)}", KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(store: Store, tenant: str, name: str | None = None) -> tuple[ApiKeyInfo, str]:
    if not tenant or not tenant.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"tenant {tenant!r}: expected letters, digits, '-' or '_'")
    key_id, key = new_key()
    return store.add_api_key(key_id, tenant, name, digest(key)), key


def parse_env_keys(value: str | None) -> dict[str, str]:
    """``key`` or ``tenant:key`` entries, comma-separated -> {digest: tenant}."""
    out: dict[str, str] = {}
    for entry in (value or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        tenant, sep, key = entry.rpartition(":")
        if not sep:
            tenant = DEFAULT_TENANT
        if len(key) < 16:
            raise ConfigError(f"BATCHYARD_API_KEYS: the key for tenant {tenant!r} is shorter than 16 characters; "
                              "use `batchyard keys create` or a long random string")
        out[digest(key)] = tenant or DEFAULT_TENANT
    return out


class Keyring:
    def __init__(self, store: Store, env_keys: str | None) -> None:
        self.store = store
        self.env = parse_env_keys(env_keys)
        self._any_stored = False
        self._checked = 0.0
        self._recent: dict[str, tuple[str, float]] = {}  # digest -> (tenant, when it was looked up)

    def required(self) -> bool:
        """Whether calls need a key: any key in the environment or (checked every few seconds) the store."""
        if self.env:
            return True
        now = time.monotonic()
        if now - self._checked > CHECK_SECONDS:
            # Revoked keys count: revoking the last key must lock the server, not open it to everyone.
            self._any_stored = bool(self.store.list_api_keys())
            self._checked = now
        return self._any_stored

    def tenant(self, authorization: str | None) -> str:
        """The tenant of the key in an ``Authorization`` header value; raises when missing or wrong."""
        if not self.required():
            return DEFAULT_TENANT
        d = _bearer_digest(authorization)
        if d in self.env:
            return self.env[d]
        found = self.store.find_api_key(d)
        if found is None:
            self._recent.pop(d, None)
            raise InvalidApiKey("the API key is not valid (unknown or revoked)")
        if len(self._recent) > 10_000:  # random keys are never remembered; this bounds even many real ones
            self._recent.clear()
        self._recent[d] = (found.tenant, time.monotonic())
        return found.tenant

    def known_tenant(self, authorization: str | None) -> str | None:
        """``tenant`` from memory alone, or None when only the store can say (``tenant`` then asks it)."""
        now = time.monotonic()
        if not self.env and now - self._checked > CHECK_SECONDS:
            return None  # whether keys are required at all is due for a look at the store
        if not self.required():
            return DEFAULT_TENANT
        d = _bearer_digest(authorization)
        if d in self.env:
            return self.env[d]
        seen = self._recent.get(d)
        return seen[0] if seen is not None and now - seen[1] <= CHECK_SECONDS else None


def _bearer_digest(authorization: str | None) -> str:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise MissingApiKey("this server needs an API key: send `Authorization: Bearer <key>`")
    return digest(key.strip())


async def authenticate(conn: HTTPConnection) -> str:
    """A dependency of every API route: the caller's tenant, kept on ``conn.state`` for ``tenant_of``.

    Async, so that a known key costs no trip to the thread pool; the store is read in a thread.
    WebSocket clients that cannot set headers (browsers) may pass ``?api_key=`` instead."""
    keyring: Keyring = conn.app.state.keyring
    header = conn.headers.get("authorization")
    if header is None and conn.scope["type"] == "websocket" and conn.query_params.get("api_key"):
        header = f"Bearer {conn.query_params['api_key']}"
    tenant = keyring.known_tenant(header)
    if tenant is None:
        tenant = await run_in_threadpool(keyring.tenant, header)
    conn.state.tenant = tenant
    return tenant
