"""What a path costs: tokens priced per model, plus compute seconds, in integer micro-credits.

Prices come from the hub (a model's designer sets them; see the mining layer) or default to a rate
proportional to the model's size, so a bigger model is never free by accident.
``node_prices`` reads the sizes from a node's model cards; a price book travels as JSON
(``prices_to_json``) in path-eval job specs and search results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..money import MICRO, price_for_tokens
from .clients import CallResult

# Default: 1 credit per million prompt tokens per billion parameters, completions twice that.
DEFAULT_PER_BILLION = (1 * MICRO, 2 * MICRO)
COMPUTE_MICRO_PER_SECOND = 200  # 0.0002 credits per second of engine time


@dataclass(frozen=True)
class Price:
    prompt_per_million: int  # micro-credits per million prompt tokens
    completion_per_million: int


@dataclass
class PriceBook:
    prices: dict[str, Price] = field(default_factory=dict)
    compute_per_second: int = COMPUTE_MICRO_PER_SECOND
    fallback: Price = field(default_factory=lambda: Price(*DEFAULT_PER_BILLION))

    def price(self, model: str) -> Price:
        return self.prices.get(model, self.fallback)

    def cost(self, call: CallResult) -> int:
        price = self.price(call.model)
        tokens = price_for_tokens(
            call.prompt_tokens, call.completion_tokens, price.prompt_per_million, price.completion_per_million
        )
        return tokens + round(call.seconds * self.compute_per_second)

    @classmethod
    def from_parameters(
        cls, parameters: dict[str, int], compute_per_second: int = COMPUTE_MICRO_PER_SECOND
    ) -> PriceBook:
        """Size-proportional default prices from parameter counts (model id -> parameters)."""
        book = cls(compute_per_second=compute_per_second)
        for model, count in parameters.items():
            billions = max(count, 1) / 1e9
            book.prices[model] = Price(
                max(1, round(DEFAULT_PER_BILLION[0] * billions)),
                max(1, round(DEFAULT_PER_BILLION[1] * billions)),
            )
        return book

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            m: {
                "prompt_per_million": p.prompt_per_million,
                "completion_per_million": p.completion_per_million,
            }
            for m, p in self.prices.items()
        }


def prices_to_json(prices: PriceBook) -> dict[str, Any]:
    return {
        "models": prices.as_dict(),
        "compute_per_second": prices.compute_per_second,
        "fallback": {
            "prompt_per_million": prices.fallback.prompt_per_million,
            "completion_per_million": prices.fallback.completion_per_million,
        },
    }


def prices_from_json(data: dict[str, Any] | None) -> PriceBook:
    if not data:
        return PriceBook()
    book = PriceBook(compute_per_second=int(data.get("compute_per_second", COMPUTE_MICRO_PER_SECOND)))
    if data.get("fallback"):
        book.fallback = Price(
            int(data["fallback"]["prompt_per_million"]), int(data["fallback"]["completion_per_million"])
        )
    for model, price in (data.get("models") or {}).items():
        book.prices[model] = Price(int(price["prompt_per_million"]), int(price["completion_per_million"]))
    return book


def node_prices(node_url: str, token: str | None, models: Sequence[str]) -> PriceBook:
    """Size-proportional prices from the parameter counts in the node's model cards. (Designer-set prices
    from the hub take over once the mining layer stores them.) Models the node has no card for get the
    fallback price."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    counts: dict[str, int] = {}
    with httpx.Client(base_url=node_url.rstrip("/"), headers=headers, timeout=30) as http:
        for model in models:
            try:
                reply = http.get(f"/api/repos/model/{model}")
            except httpx.HTTPError:
                continue
            if reply.status_code == 200:
                parameters = (reply.json().get("card") or {}).get("parameters")
                if isinstance(parameters, int) and parameters > 0:
                    counts[model] = parameters
    return PriceBook.from_parameters(counts)
