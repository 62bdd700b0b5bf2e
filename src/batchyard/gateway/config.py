"""The gateway's configuration: the upstream(s), their limits and prices, from the server's settings.

The same settings (``BATCHYARD_UPSTREAM``, ``BATCHYARD_UPSTREAM_RPM``, ...) configure ``batchyard serve`` and
separate ``batchyard worker`` processes, which read them from the environment. The API key is read from the
environment variable the settings name, in whichever process sends the request: it is never stored.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from batchyard.core.errors import ConfigError
from batchyard.gateway.limits import Nominal
from batchyard.gateway.pricing import PriceTable
from batchyard.server.settings import Settings


@dataclass(frozen=True)
class Upstream:
    """One OpenAI-compatible base URL and the environment variable holding its key."""

    url: str
    key_env: str

    @property
    def key(self) -> str | None:
        return os.environ.get(self.key_env) or None

    @property
    def limit_key(self) -> str:
        """Limits are per upstream key: the shared-state document for this URL and key (hashed: the key
        itself never reaches the store)."""
        digest = hashlib.sha256(f"{self.url}\0{self.key or ''}".encode()).hexdigest()[:20]
        return f"gateway.upstream:{digest}"

    def endpoint(self, path: str) -> str:
        """The URL for a batch line's ``url`` (``/v1/chat/completions``) under this base URL (``.../v1``)."""
        rest = path[3:] if path.startswith("/v1/") and self.url.rstrip("/").endswith("/v1") else path
        return self.url.rstrip("/") + "/" + rest.lstrip("/")


@dataclass(frozen=True)
class GatewayConfig:
    default: Upstream
    routes: tuple[tuple[str, Upstream], ...] = ()
    nominal: Nominal = field(default_factory=Nominal)
    concurrency: int = 64
    timeout_s: float = 600.0
    prices: PriceTable = field(default_factory=PriceTable)
    max_file_bytes: int = 200 * 1024 * 1024
    max_lines: int = 50_000

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayConfig:
        if not settings.upstream:
            raise ConfigError("the gateway needs an upstream: --upstream URL or BATCHYARD_UPSTREAM")
        routes = []
        for spec in settings.upstream_routes:
            model, sep, target = spec.partition("=")
            if not sep or not model or not target.lower().startswith(("http://", "https://")):
                raise ConfigError(f"upstream route {spec!r}: expected MODEL=URL or MODEL=URL@KEY_ENV")
            url, _, key_env = target.partition("@")
            routes.append((model, Upstream(url, key_env or settings.upstream_key_env)))
        try:
            prices = PriceTable.load(settings.prices)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"prices: {exc}") from None
        return cls(default=Upstream(settings.upstream, settings.upstream_key_env), routes=tuple(routes),
                   nominal=Nominal(settings.upstream_rpm, settings.upstream_tpm, 0.5 / settings.upstream_recovery_s),
                   concurrency=settings.upstream_concurrency, timeout_s=settings.upstream_timeout_s, prices=prices,
                   max_file_bytes=settings.gateway_max_file_bytes, max_lines=settings.gateway_max_lines)

    def upstream_for(self, model: str | None) -> Upstream:
        for pattern, up in self.routes:
            if model is not None and (model == pattern or (pattern.endswith("*") and model.startswith(pattern[:-1]))):
                return up
        return self.default

    @property
    def upstreams(self) -> list[Upstream]:
        return [self.default, *(up for _, up in self.routes if up != self.default)]
