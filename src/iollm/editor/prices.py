"""Prices for runs started from the editor, read in-process from the hub's model cards (the same
size-proportional rule ``iollm path run`` gets over HTTP), so badges show what a run really costs."""

from __future__ import annotations

from ..hub import Hub, Identity
from ..paths.pricing import PriceBook


def price_book(hub: Hub, caller: Identity, models: list[str]) -> PriceBook:
    counts: dict[str, int] = {}
    for model in models:
        try:
            repo = hub.get_repo(caller, "model", model.partition("@")[0], pull_through=False)
            head = hub.head(repo)
            parameters = hub.card(head).get("parameters") if head else None
        except Exception:  # an unknown model gets the fallback price; the run reports the real error
            continue
        if isinstance(parameters, int) and parameters > 0:
            counts[model] = parameters
    return PriceBook.from_parameters(counts)
