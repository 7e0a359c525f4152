"""The simple baselines every search report measures on the same held-out tasks as the chosen path, and
the plain verdict against them (LLMRouterBench, arXiv 2601.07206: many routers fail to beat simple
baselines, so the report must say when ours does not).

- best single model (chosen on the search split), and the cheapest model;
- self-consistency of the best single model at (about) the chosen path's cost;
- random routing at equal cost: a seeded coin between two single models whose mix has the chosen path's
  search-split cost (the pair with the best expected search quality: the "zero router" hull); its
  held-out score is the expectation over the coin, task by task;
- the oracle router: per task, the best single model (the cheapest among equals): the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .candidate import Candidate
from .stats import bootstrap_ci, paired_bootstrap

Records = Sequence[Mapping[str, Any]]


def summary(scores: Sequence[float], costs: Sequence[float]) -> dict[str, Any]:
    mean, low, high = bootstrap_ci(list(scores))
    n = max(1, len(scores))
    return {
        "score": round(mean, 4),
        "ci": [round(low, 4), round(high, 4)],
        "cost_per_task": round(sum(costs) / n, 2),
        "n": len(scores),
        "scores": [round(s, 4) for s in scores],
    }


def oracle(singles: Mapping[str, Records]) -> dict[str, Any]:
    """Per task the best score any single model got, at the cheapest cost reaching it."""
    names = list(singles)
    n = min(len(r) for r in singles.values())
    scores, costs = [], []
    for i in range(n):
        top = max(singles[name][i]["score"] for name in names)
        scores.append(top)
        costs.append(min(singles[name][i]["cost"] for name in names if singles[name][i]["score"] == top))
    return {"name": "oracle router over " + ", ".join(names), **summary(scores, costs)}


def random_mix(
    singles: Sequence[Candidate], stats: Mapping[str, Mapping[str, Any]], target: float
) -> tuple[Candidate, Candidate, float]:
    """Two singles and the probability of the second whose mixed search-split cost is ``target``; of all
    such pairs, the one with the best expected search quality. Outside the singles' cost range, the
    cheapest (or the best) single alone."""
    by_cost = sorted(singles, key=lambda c: stats[c.name]["cost"])
    if target <= stats[by_cost[0].name]["cost"]:
        return by_cost[0], by_cost[0], 0.0
    best: tuple[float, Candidate, Candidate, float] | None = None
    for a in by_cost:
        for b in by_cost:
            ca, cb = stats[a.name]["cost"], stats[b.name]["cost"]
            if not ca <= target <= cb or cb == ca:
                continue
            p = (target - ca) / (cb - ca)
            quality = (1 - p) * stats[a.name]["quality"] + p * stats[b.name]["quality"]
            if best is None or quality > best[0]:
                best = (quality, a, b, p)
    if best is None:  # dearer than every single: the best single alone
        top = max(by_cost, key=lambda c: (stats[c.name]["quality"], -stats[c.name]["cost"]))
        return top, top, 0.0
    return best[1], best[2], best[3]


def random_routing(a: Candidate, b: Candidate, p: float, ra: Records, rb: Records) -> dict[str, Any]:
    scores = [(1 - p) * x["score"] + p * y["score"] for x, y in zip(ra, rb, strict=True)]
    costs = [(1 - p) * x["cost"] + p * y["cost"] for x, y in zip(ra, rb, strict=True)]
    label = a.name if a.name == b.name else f"{a.name} / {b.name} with p={p:.2f}"
    return {"name": f"random routing: {label}", **summary(scores, costs)}


def versus(
    chosen: Sequence[float], baseline: Sequence[float], chosen_cost: float, cost: float
) -> dict[str, Any]:
    """Chosen minus baseline on the same tasks: mean difference with its paired 95 % interval."""
    delta, low, high = paired_bootstrap(list(chosen), list(baseline))
    return {
        "delta": round(delta, 4),
        "delta_ci": [round(low, 4), round(high, 4)],
        "cost_ratio": round(chosen_cost / cost, 4) if cost else None,
        "beats": low > 0,
        "loses": high < 0,
    }


def compare_all(
    chosen: Candidate,
    chosen_records: Records,
    baselines: Mapping[str, tuple[str, Records] | dict[str, Any] | None],
) -> dict[str, Any]:
    """Each baseline's held-out figures and the chosen path against it, plus the verdict sentences."""
    mine = summary([r["score"] for r in chosen_records], [r["cost"] for r in chosen_records])
    table: dict[str, Any] = {}
    for label, value in baselines.items():
        if value is None:
            table[label] = None
            continue
        if isinstance(value, tuple):
            name, records = value
            value = {"name": name, **summary([r["score"] for r in records], [r["cost"] for r in records])}
        entry = dict(value)
        entry["vs_chosen"] = versus(
            mine["scores"], entry["scores"], mine["cost_per_task"], entry["cost_per_task"]
        )
        table[label] = entry
    return {
        "chosen": {"name": chosen.name, **mine},
        "baselines": table,
        "verdict": verdict(chosen.name, table),
    }


def verdict(chosen: str, table: Mapping[str, Any]) -> list[str]:
    """Plain sentences: which simple baselines the chosen path beats, matches or loses to."""
    lines = []
    for label, entry in table.items():
        if entry is None or label == "oracle_router":
            continue
        vs = entry["vs_chosen"]
        what = label.replace("_", " ")
        ci = f"{vs['delta']:+.3f}, paired 95% CI {vs['delta_ci'][0]:+.3f}..{vs['delta_ci'][1]:+.3f}"
        cost = f"at {vs['cost_ratio']:.2f}x its cost" if vs["cost_ratio"] is not None else ""
        if vs["beats"]:
            lines.append(f"The chosen path beats {what} ({ci}) {cost}.")
        elif vs["loses"]:
            lines.append(f"The chosen path is WORSE than {what} ({ci}) {cost}.")
        else:
            lines.append(
                f"The chosen path does NOT beat {what}: the difference is within noise ({ci}) {cost}."
            )
    ceiling = table.get("oracle_router")
    if ceiling is not None:
        gap = ceiling["vs_chosen"]["delta"]
        lines.append(
            f"The oracle router (ceiling) scores {ceiling['score']:.3f}; the chosen path is {-gap:.3f} below it."
        )
    return lines


def self_consistency_k(chosen_cost: float, single_cost: float, ks: Sequence[int]) -> tuple[int, bool]:
    """The vote size at about the chosen path's cost: the largest k with k x the single's cost within it;
    the smallest k (flagged as dearer) when even that is over."""
    if single_cost <= 0 or math.isnan(chosen_cost):
        return min(ks), False
    fitting = [k for k in ks if k * single_cost <= chosen_cost * 1.05]
    return (max(fitting), True) if fitting else (min(ks), False)
