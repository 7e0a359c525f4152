"""Search for the best path on a suite: racing over the space on the search split, the Pareto front of
quality, cost and latency, then final figures from the held-out split only.

``Search(SearchConfig(...), client, prices, on_progress)`` is the one way in, for the CLI, the editor and
the benchmark: everything a caller decides (the suite and models, the budget, candidates of its own, where
evaluations run) is in the config; ``preview`` says what the search will spend and ``run`` returns the
result. The held-out split is passed to nothing before the search has chosen: ``Search.run`` evaluates it
only in its final phase, for the chosen path, the front and the baselines.

The rest lives by concern: ``evaluation`` (the unit of work and the per-search evaluator), ``racing``
(successive halving), ``search_result`` (the JSON result), ``pricing`` and ``clients``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .clients import ModelClient
from .evaluation import Evaluator, EvaluatorFactory, Progress
from .pricing import PriceBook
from .racing import front_pool, pick_best, plan_schedule, race
from .search_result import Outcome, heldout_figures, search_result, tally
from .space import Candidate, build_space, projected_calls
from .suites import Suite, SuiteSplit


@dataclass
class SearchConfig:
    """What a search is asked to do; callers build one and hand it to ``Search``."""

    models: list[str]
    suite: Suite
    budget: int | None = None  # evaluations; default a fifth of exhaustive (see Search)
    workers: int = 4
    seed: int = 0
    heldout_fraction: float = 0.5
    max_tasks: int | None = None
    max_tokens: int | None = None  # caps every call's completion (see build_space)
    extra: Sequence[Candidate] = ()  # candidates that race beside the generated space (the editor's drawing)
    evaluator: EvaluatorFactory = Evaluator  # where pairs are evaluated (see EvaluatorFactory)


class Search:
    """One search: the space, racing on the search split, then the held-out phase."""

    def __init__(
        self,
        config: SearchConfig,
        client: ModelClient,
        prices: PriceBook,
        on_progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.prices = prices
        self.split: SuiteSplit = config.suite.split(config.seed, config.heldout_fraction, config.max_tasks)
        checker = config.suite.checkers[0] if config.suite.tasks else "exact"
        generated = build_space(config.models, checker, prices, config.seed, config.max_tokens)
        self.space: list[Candidate] = [*generated, *config.extra]
        self.exhaustive = len(self.space) * len(self.split.search)
        # Default: a fifth of exhaustive, rounded down so it never exceeds 20 % (at least one pass).
        self.budget = config.budget or max(len(self.space), self.exhaustive // 5)
        self.evaluator = config.evaluator(
            client, prices, config.seed, config.workers, on_progress=on_progress
        )

    def preview(self) -> dict[str, Any]:
        """What the search will spend, printed before it starts."""
        calls = projected_calls(self.space, len(self.split.search), self.config.seed)
        schedule = plan_schedule(len(self.space), len(self.split.search), self.budget)
        per_eval = calls["naive"] / max(1, self.exhaustive)
        unique_share = calls["unique"] / max(1, calls["naive"])
        return {
            "space_size": len(self.space),
            "templates": tally(c.template for c in self.space),
            "search_tasks": len(self.split.search),
            "heldout_tasks": len(self.split.heldout),
            "budget": self.budget,
            "evaluations_exhaustive": self.exhaustive,
            "schedule": schedule.__dict__,
            "projected_calls": {
                "exhaustive": calls["naive"],
                "exhaustive_unique": calls["unique"],
                "search": round(min(self.budget, schedule.projected) * per_eval),
                "search_unique_at_most": round(min(self.budget, schedule.projected) * per_eval * unique_share)
                if schedule.projected < self.exhaustive
                else calls["unique"],
            },
        }

    async def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        search_tasks = self.split.search
        finalists, rounds, schedule = await race(
            self.space, search_tasks, self.evaluator, self.budget, self.config.seed
        )
        stats = {c.name: self.evaluator.figures(c, search_tasks) for c in self.space}
        best = pick_best(finalists, stats)
        front = front_pool(self.space, stats, rounds)
        baselines = await self._baselines(stats)
        # Only now: the held-out split, for the chosen path, the front and the baselines.
        final = {c.name: c for c in [best, *front, *(b for b in baselines.values() if b is not None)]}
        heldout = self.split.heldout
        await self.evaluator.run([(c, t) for c in final.values() for t in heldout], "heldout")
        figures = {name: heldout_figures(self.evaluator.records(c, heldout)) for name, c in final.items()}
        seconds = time.perf_counter() - started
        outcome = Outcome(best, front, finalists, baselines, stats, figures, rounds, schedule, seconds)
        return search_result(self, outcome)

    async def _baselines(self, stats: dict[str, dict[str, Any]]) -> dict[str, Candidate | None]:
        """Best single model (every single candidate completed on the search split, counted apart from
        the search), self-consistency with it, and the all-models cheapest-first cascade."""
        singles = [c for c in self.space if c.template == "single"]
        await self.evaluator.run([(c, t) for c in singles for t in self.split.search], "baseline")
        for c in singles:
            stats[c.name] = self.evaluator.figures(c, self.split.search)
        single = pick_best(singles, stats)
        model, style = single.assignment["solver"], single.params["style"]
        vote = next(
            (
                c
                for c in self.space
                if c.template == "vote"
                and c.params["k"] == 5
                and c.assignment["voter"] == model
                and c.params["style"] == style
            ),
            None,
        )
        chains = [c for c in self.space if c.template == "cascade" and c.params["style"] == style]
        cascade = max(chains, key=lambda c: len(c.assignment["models"]), default=None)
        return {"best_single": single, "self_consistency": vote, "cascade": cascade}
