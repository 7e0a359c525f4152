"""A candidate path: a named template instance and the workflow graph that runs it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .graph import parse_graph
from .pricing import PriceBook


@dataclass(frozen=True)
class Candidate:
    """One point of the space: a named template instance and the graph that runs it. Names are unique
    within a space, so a candidate is identified (compared, hashed) by its name and template."""

    name: str
    template: str
    assignment: dict[str, Any] = field(compare=False)
    params: dict[str, Any] = field(compare=False)
    graph: dict[str, Any] = field(repr=False, compare=False)

    @property
    def hash(self) -> str:
        return parse_graph(self.graph).canonical_hash()

    @property
    def models(self) -> list[str]:
        return sorted(
            {
                m
                for n in self.graph["nodes"]
                for m in ([n["model"]] if n.get("model") else n.get("models", []))
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "template": self.template,
            "assignment": self.assignment,
            "params": self.params,
            "graph": self.graph,
        }


def short(model: str) -> str:
    """``iollm/qwen2.5-coder-0.5b-instruct`` -> ``qwen2.5-coder-0.5b-instruct`` (names stay readable)."""
    return model.rsplit("/", 1)[-1]


def by_price(models: Iterable[str], prices: PriceBook) -> list[str]:
    """Cheapest first: prompt plus completion price per token, then the id (a stable order)."""
    return sorted(
        models, key=lambda m: (prices.price(m).prompt_per_million + prices.price(m).completion_per_million, m)
    )
