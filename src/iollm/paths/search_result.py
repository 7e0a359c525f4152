"""The search's JSON result: every figure of the chosen path, the front and the baselines, how they
compare with the best single model on the held-out split, and what the search itself cost.

``report.write_report`` draws the markdown page and the Pareto plot from this result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .candidate import Candidate
from .pricing import prices_to_json
from .racing import Round, Schedule, coarse, pick_best
from .stats import bootstrap_ci, paired_bootstrap, pareto_front

if TYPE_CHECKING:
    from .search import Search


@dataclass
class Outcome:
    """What one search found, before it is written up."""

    best: Candidate
    front: list[Candidate]
    finalists: list[Candidate]
    baselines: dict[str, Candidate | None]
    stats: dict[str, dict[str, Any]]  # search-split figures per candidate
    figures: dict[str, dict[str, Any]]  # held-out figures of the chosen path, the front and the baselines
    rounds: list[Round]
    schedule: Schedule
    seconds: float
    learned: list[Candidate] = field(default_factory=list)  # routers and cascades fitted on the search split
    simple_baselines: dict[str, Any] = field(default_factory=dict)  # held-out, same tasks (``baselines``)


def search_result(search: Search, outcome: Outcome) -> dict[str, Any]:
    """The result of ``search`` as JSON-ready data (what the CLI prints, the report draws and the
    leaderboard submission sends)."""
    best, front, stats, figures = outcome.best, outcome.front, outcome.stats, outcome.figures

    def entry(c: Candidate) -> dict[str, Any]:
        held = figures.get(c.name)
        return {
            "name": c.name,
            "template": c.template,
            "assignment": c.assignment,
            "params": c.params,
            "hash": c.hash,
            "search": rounded(stats[c.name]),
            **({"heldout": rounded(held, drop=("scores",))} if held else {}),
        }

    front_points = [
        (
            figures[c.name]["score"],
            figures[c.name]["cost_per_task"],
            coarse(figures[c.name]["latency_s"]),
        )
        for c in front
    ]
    on_front = {front[i].name for i in pareto_front(front_points)}
    single = outcome.baselines["best_single"]
    evaluator = search.evaluator
    made, cached = evaluator.call_counts()
    return {
        "suite": search.config.suite.name,
        "suite_source": search.config.suite.source,
        "models": list(search.config.models),
        "prices": prices_to_json(search.prices),
        "seed": search.config.seed,
        "split": {
            "seed": search.split.seed,
            "heldout_fraction": search.split.heldout_fraction,
            "search_size": len(search.split.search),
            "heldout_size": len(search.split.heldout),
            "fingerprint": search.split.fingerprint,
        },
        "space": {
            "size": len(search.space),
            "templates": tally(c.template for c in search.space),
            "reasoning_tokens": search.config.suite.reasoning_tokens,  # None: the space's defaults
        },
        "budget": search.budget,
        "schedule": outcome.schedule.__dict__,
        "rounds": [r.to_json() for r in outcome.rounds],
        "evaluations_used": evaluator.spent.get("search", 0),
        "evaluations_exhaustive": search.exhaustive,
        "baseline_evaluations": evaluator.spent.get("baseline", 0),
        # completing a program path on the search split to fit its cascade's threshold
        "learned_evaluations": evaluator.spent.get("learned", 0),
        "heldout_evaluations": evaluator.spent.get("heldout", 0),
        "calls_made": made,
        "calls_cached": cached,
        "jobs": list(getattr(evaluator, "jobs", [])),
        "best": {**entry(best), "graph": best.graph},
        "heldout": rounded(figures[best.name], drop=("scores",)),
        "heldout_scores": figures[best.name]["scores"],
        "heldout_task_ids": [t.id for t in search.split.heldout],
        "finalists": [c.name for c in outcome.finalists],
        "candidates": [
            {"name": c.name, "template": c.template, **rounded(stats[c.name])}
            for c in search.space
            if stats[c.name]["n"]
        ],
        "pareto": [{**entry(c), "on_heldout_front": c.name in on_front, "graph": c.graph} for c in front],
        "baselines": {
            k: ({**entry(c), "graph": c.graph} if c is not None else None)
            for k, c in outcome.baselines.items()
        },
        "vs_best_single": compare(best, single, front, stats, figures),
        "learned": [{**entry(c), "graph": c.graph} for c in outcome.learned],
        "simple_baselines": outcome.simple_baselines,
        "notes": list(getattr(search, "notes", [])),
        "economics": economics(best, single, figures, evaluator.results.values()),
        "seconds": round(outcome.seconds, 2),
    }


def heldout_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Final figures: mean score with its 95 % bootstrap interval (the leaderboard's fixed seed), costs."""
    scores = [r["score"] for r in records]
    mean, low, high = bootstrap_ci(scores)
    n = max(1, len(records))
    return {
        "score": mean,
        "ci_low": low,
        "ci_high": high,
        "cost_per_task": sum(r["cost"] for r in records) / n,
        "latency_s": sum(r["latency_s"] for r in records) / n,
        "n": len(records),
        "scores": scores,
    }


def compare(
    best: Candidate,
    single: Candidate,
    front: list[Candidate],
    stats: dict[str, dict[str, Any]],
    figures: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The chosen path, and the front's operating points chosen on the search split, against the best
    single model on the held-out split: quality difference (paired bootstrap) and cost ratio."""

    def versus(c: Candidate) -> dict[str, Any]:
        mine, theirs = figures[c.name], figures[single.name]
        delta, low, high = paired_bootstrap(mine["scores"], theirs["scores"])
        ratio = mine["cost_per_task"] / theirs["cost_per_task"] if theirs["cost_per_task"] else math.inf
        return {
            "name": c.name,
            "quality_delta": round(delta, 4),
            "delta_ci": [round(low, 4), round(high, 4)],
            "cost_ratio": round(ratio, 4),
            "same_quality_at_half_cost": delta >= 0 and ratio <= 0.5,
            "plus_3_points_at_equal_cost": delta >= 0.03 and ratio <= 1.0,
        }

    single_cost = stats[single.name]["cost"]
    cheaper = [c for c in front if stats[c.name]["cost"] <= 0.5 * single_cost and c.name != single.name]
    equal = [c for c in front if stats[c.name]["cost"] <= single_cost and c.name != single.name]
    points = {}
    for label, pool in (("half_cost", cheaper), ("equal_cost", equal)):
        pick = pick_best(pool, stats) if pool else None
        points[label] = versus(pick) if pick is not None else None
    chosen = versus(best)
    met = [
        p
        for p in (chosen, *(p for p in points.values() if p))
        if p["same_quality_at_half_cost"] or p["plus_3_points_at_equal_cost"]
    ]
    return {
        "best_single": single.name,
        "chosen": chosen,
        "operating_points": points,
        "target_met_by": [p["name"] for p in met],
    }


def economics(
    best: Candidate, single: Candidate, figures: dict[str, dict[str, Any]], records: Any
) -> dict[str, Any]:
    """What the search itself cost (calls actually made, all phases) and after how many production
    queries the chosen path's saving over the best single model pays it back (None: it saves nothing)."""
    spend = sum(r.get("cost_paid", 0) for r in records)
    saving = figures[single.name]["cost_per_task"] - figures[best.name]["cost_per_task"]
    return {
        "search_spend": spend,
        "saving_per_query": round(saving, 2),
        "break_even_queries": math.ceil(spend / saving) if saving > 0 else None,
    }


def tally(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def rounded(figures: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items() if k not in drop}
