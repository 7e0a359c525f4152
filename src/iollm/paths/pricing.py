"""What a path costs: tokens priced per model, plus compute seconds, in integer micro-credits.

Prices come from the hub (a model's designer sets them; see the mining layer) or default to a rate
proportional to the model's size, so a bigger model is never free by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
