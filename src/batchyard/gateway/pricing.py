"""Prices per model: what a batch cost, and what the same requests would have cost one by one.

A price table maps a model name (or a prefix ending in ``*``) to USD per million input and output tokens at
the synchronous price, and the batch discount (0.5: batch requests cost half). The built-in table holds the
models seed 002 used; ``--prices FILE`` (JSON of the same shape) replaces or extends it. A model with no
price costs nothing (a self-hosted server), and says so in the batch's cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# USD per 1M tokens, synchronous; the batch API charges ``batch_discount`` of that.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini*": {"input": 0.15, "output": 0.60, "batch_discount": 0.5},
    "gpt-4o*": {"input": 2.50, "output": 10.00, "batch_discount": 0.5},
    "gpt-4.1-mini*": {"input": 0.40, "output": 1.60, "batch_discount": 0.5},
    "gpt-4.1*": {"input": 2.00, "output": 8.00, "batch_discount": 0.5},
    "text-embedding-3-small": {"input": 0.02, "output": 0.0, "batch_discount": 0.5},
    "text-embedding-3-large": {"input": 0.13, "output": 0.0, "batch_discount": 0.5},
}


@dataclass(frozen=True)
class Price:
    input: float           # USD per 1M input tokens, synchronous
    output: float          # USD per 1M output tokens, synchronous
    batch_discount: float  # the share of the synchronous price a batch request costs

    def sync_cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000

    def batch_cost(self, input_tokens: int, output_tokens: int) -> float:
        return self.sync_cost(input_tokens, output_tokens) * self.batch_discount


class PriceTable:
    def __init__(self, prices: dict[str, dict[str, float]] | None = None) -> None:
        table = dict(DEFAULT_PRICES)
        table.update(prices or {})
        self._exact = {k: _price(k, v) for k, v in table.items() if not k.endswith("*")}
        # Longest prefix first: "gpt-4o-mini*" before "gpt-4o*".
        self._prefixes = sorted(((k[:-1], _price(k, v)) for k, v in table.items() if k.endswith("*")),
                                key=lambda kv: -len(kv[0]))

    @classmethod
    def load(cls, path: str | Path | None) -> PriceTable:
        if path is None:
            return cls()
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"price table {path}: expected a JSON object of model -> prices")
        return cls(data)

    def get(self, model: str | None) -> Price | None:
        if not model:
            return None
        if model in self._exact:
            return self._exact[model]
        for prefix, price in self._prefixes:
            if model.startswith(prefix):
                return price
        return None


def _price(model: str, v: Any) -> Price:
    try:
        return Price(input=float(v["input"]), output=float(v.get("output", 0.0)),
                     batch_discount=float(v.get("batch_discount", 0.5)))
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"price of {model!r}: expected {{input, output, batch_discount}}, got {v!r}") from exc
