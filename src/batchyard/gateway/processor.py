"""The ``openai-request`` processor: one line of an OpenAI batch file, sent to the upstream.

An item's payload is the line (``custom_id``, ``method``, ``url``, ``body``); the batch's shared params say
its endpoint and when its completion window ends (``expires_at``). What happens to a request:

* 200: the result is OpenAI's ``response`` (``status_code``, ``request_id``, ``body``) plus its usage and
  cost, which the output file and the batch's totals are made from;
* 429 or 503: the upstream is over its limits. Every worker backs off (``Retry-After``, then a lower shared
  rate, see ``limits``), and the item is retried when the upstream said (``RetryAfter``);
* any other 4xx: final. The item fails with the response attached: OpenAI puts such lines in the error file
  with their response;
* 5xx, timeouts, connection errors: retried with backoff, then failed with the last response if any;
* after the completion window: not sent; the line fails as ``batch_expired``, as OpenAI's do.

The idempotency key (batch id and ``custom_id``) goes with every request as ``Idempotency-Key``. A line whose
success is recorded is never sent again (the engine's exactly-once recording); one in flight when a worker
died may be.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx

from batchyard.core.errors import PermanentError, RetryAfter
from batchyard.core.processor import Context, Item, processor
from batchyard.core.retry import RetryPolicy, retry_after_seconds
from batchyard.gateway.upstream import PROCESSOR, gateway
from batchyard.server.settings import Settings

# Codes of the error lines, by the name of the exception that failed the item (what the store keeps).
ERROR_CODES = {"BatchExpired": "batch_expired", "UpstreamRejected": "invalid_request",
               "UpstreamError": "server_error", "UpstreamUnavailable": "server_error",
               "RetryAfter": "rate_limit_exceeded", "TimeoutError": "timeout"}
DEFAULT_OUTPUT_TOKENS = 256  # the estimate of a completion's tokens when the request sets no maximum
IMAGE_TOKENS = 85            # an image part, at OpenAI's low-detail price; the response corrects it


class BatchExpired(PermanentError):
    """The line was not sent before the batch's completion window ended."""


class UpstreamRejected(PermanentError):
    """A 4xx other than 429: the request itself is wrong; sending it again would not help."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


class UpstreamError(Exception):
    """A 5xx: retried with backoff; the last response is kept with the failure."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


class UpstreamUnavailable(Exception):
    """No response: a timeout or a connection error. Retried with backoff."""


def estimate_tokens(body: dict[str, Any]) -> float:
    """Tokens a request will use, guessed before sending it (about 4 characters a token), output included."""
    chars = 0
    images = 0

    def walk(value: Any) -> None:
        nonlocal chars, images
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            if value.get("type") in ("image_url", "input_image"):
                images += 1
                return
            for k, v in value.items():
                if k not in ("role", "type", "name", "detail"):
                    walk(v)

    for key in ("messages", "input", "prompt", "instructions"):
        walk(body.get(key))
    prompt = chars / 4 + images * IMAGE_TOKENS
    output = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    if "messages" in body or "prompt" in body or "max_output_tokens" in body or "instructions" in body:
        prompt += int(output) if isinstance(output, (int, float)) else DEFAULT_OUTPUT_TOKENS
    return max(1.0, prompt)


def usage_of(body: Any) -> dict[str, int]:
    """The response's usage in the batch object's terms (input/output tokens and their details)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return {}
    inp = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    out = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    in_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    return {"input_tokens": int(inp), "output_tokens": int(out),
            "total_tokens": int(usage.get("total_tokens") or inp + out),
            "cached_tokens": int(in_details.get("cached_tokens") or 0),
            "reasoning_tokens": int(out_details.get("reasoning_tokens") or 0)}


def _response_body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": {"message": resp.text[:2000], "type": "invalid_response", "code": None}}


def _request_id(resp: httpx.Response, key: str) -> str:
    rid = resp.headers.get("x-request-id")
    return rid or f"req_{hashlib.sha256(f'{key}:{time.time_ns()}'.encode()).hexdigest()[:24]}"


def _concurrency() -> int:
    """The upstream's concurrency from the environment, until the server configures it (``upstream.configure``):
    a separate worker claims with the same cap as the server's."""
    try:
        return Settings().upstream_concurrency
    except ValueError:  # a malformed BATCHYARD_* setting is the server's to report, not this import's
        return Settings.model_fields["upstream_concurrency"].default  # type: ignore[no-any-return]


@processor(PROCESSOR, mode="async", retry=RetryPolicy(max_attempts=10, base_delay=1.0, max_delay=60.0),
           concurrency=_concurrency(),
           description="One request of an OpenAI batch file, sent to the gateway's OpenAI-compatible upstream "
                       "(batchyard serve --upstream URL); the result is OpenAI's response line.")
async def openai_request(item: Item, ctx: Context) -> dict[str, Any]:
    line = item.payload if isinstance(item.payload, dict) else {}
    params = item.params if isinstance(item.params, dict) else {}
    expires_at = params.get("expires_at")
    if expires_at is not None and time.time() >= float(expires_at):
        raise BatchExpired("This request could not be executed before the completion window expired.")
    body = line.get("body") or {}
    gw = gateway()
    model = body.get("model") if isinstance(body, dict) else None
    up = gw.config.upstream_for(model)
    estimated = estimate_tokens(body)
    await gw.acquire(up, estimated)
    try:
        resp = await gw.post(up, line.get("url") or params.get("endpoint") or "", body, ctx.idempotency_key)
    except httpx.TimeoutException as exc:
        raise UpstreamUnavailable(f"the upstream did not answer in time: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        raise UpstreamUnavailable(f"cannot reach the upstream: {type(exc).__name__}: {exc}") from None
    status = resp.status_code
    answer = {"status_code": status, "request_id": _request_id(resp, ctx.idempotency_key),
              "body": _response_body(resp)}
    if status in (429, 503):
        wait = retry_after_seconds(resp.headers.get("retry-after"))
        await gw.throttled(up, status, wait)
        raise RetryAfter(wait if wait is not None else 1.0, f"the upstream answered {status}")
    if 400 <= status < 500:
        raise UpstreamRejected(f"the upstream refused the request with {status}", answer)
    if status >= 300:
        raise UpstreamError(f"the upstream answered {status}", answer)
    usage = usage_of(answer["body"])
    if usage:
        await gw.correct(up, estimated, usage["total_tokens"])
    price = gw.config.prices.get(model or (answer["body"].get("model") if isinstance(answer["body"], dict) else None))
    if price is not None and usage:
        cost, sync = price.batch_cost(usage["input_tokens"], usage["output_tokens"]), \
            price.sync_cost(usage["input_tokens"], usage["output_tokens"])
        ctx.report_cost(cost)
    else:
        cost = sync = 0.0
    return {**answer, "usage": usage, "cost": cost, "sync_cost": sync}
