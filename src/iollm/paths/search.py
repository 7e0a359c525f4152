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

from .baselines import compare_all, oracle, random_mix, random_routing, self_consistency_k
from .call_plan import projected_calls
from .candidate import Candidate
from .clients import ModelClient
from .evaluation import Evaluator, EvaluatorFactory, Progress, SearchError
from .learned import Table, embed_tasks, learn_cascades, learn_program_cascades, learn_routers, program_table
from .pricing import PriceBook
from .racing import front_pool, pick_best, plan_schedule, race
from .search_result import Outcome, heldout_figures, search_result, tally
from .space import build_space, restrict
from .suites import Suite, SuiteSplit
from .template_texts import VOTE_KS


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
    templates: Sequence[str] | None = None  # only these templates (None: all); ``styles`` likewise
    styles: Sequence[str] | None = None
    learned: bool = True  # fit routers and logprob cascades on the search split (see ``learned``)
    embed_model: str | None = None  # the routers' features; default the cheapest model


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
        full = build_space(
            config.models, checker, prices, config.seed, config.max_tokens, config.suite.reasoning_tokens
        )
        try:
            generated = (
                restrict(full, config.templates, config.styles) if config.templates or config.styles else full
            )
        except ValueError as exc:  # an unknown template or style: say which exist
            known = sorted({c.template for c in full})
            raise SearchError(f"{exc} (templates: {', '.join(known)}; styles: direct, step)") from None
        # The baselines are single models whatever the restriction (a space of cascades alone still
        # reports the best single model), in the restricted styles where there are such candidates.
        singles = [c for c in full if c.template == "single"]
        styled = [c for c in singles if not config.styles or c.params.get("style") in config.styles]
        self.singles: list[Candidate] = styled or singles
        self.space: list[Candidate] = [*generated, *config.extra]
        self.learned: list[Candidate] = []  # fitted after the race (routers, logprob cascades)
        self.notes: list[str] = []
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
        front = front_pool(self.space, stats, rounds)
        baselines = await self._baselines(stats)
        single = baselines["best_single"]
        assert single is not None
        if self.config.learned:
            self.learned = await self._learn(stats, single)
        best = pick_best([*finalists, *self.learned], stats)
        baselines["self_consistency"] = self._self_consistency(stats, best, single)
        singles = self.singles
        # Only now: the held-out split, for the chosen path, the front, the learned paths and the baselines
        # (every single model: the oracle router, random routing and the cheapest model are made of them).
        pool = [best, *front, *self.learned, *singles, *(b for b in baselines.values() if b is not None)]
        final = {c.name: c for c in pool}
        heldout = self.split.heldout
        await self.evaluator.run([(c, t) for c in final.values() for t in heldout], "heldout")
        figures = {name: heldout_figures(self.evaluator.records(c, heldout)) for name, c in final.items()}
        simple = self._simple_baselines(best, single, singles, baselines, stats)
        seconds = time.perf_counter() - started
        outcome = Outcome(
            best, front, finalists, baselines, stats, figures, rounds, schedule, seconds, self.learned, simple
        )
        return search_result(self, outcome)

    async def _learn(self, stats: dict[str, dict[str, Any]], single: Candidate) -> list[Candidate]:
        """Routers and logprob cascades fitted on the single models' search-split evaluations of the best
        single's prompt style; their figures are cross-validated (see ``learned``)."""
        style = single.params["style"]
        singles = [c for c in self.singles if c.params.get("style") == style]
        if len(singles) < 2:
            return []
        tasks = self.split.search
        table = Table.from_records(singles, tasks, lambda c, t: self.evaluator.results[(c.name, t.id)])
        found = []
        embed_model = self.config.embed_model or singles[0].assignment["solver"]
        try:
            vectors, embed_cost = await embed_tasks(self.evaluator.client, embed_model, tasks, self.prices)
            found += learn_routers(table, vectors, embed_cost, embed_model, style, self.config.seed)
        except Exception as exc:  # no embeddings endpoint: the search goes on without routers, and says so
            self.notes.append(f"learned routers skipped: {exc.__class__.__name__}: {exc}")
        caps = {"equal-cost": stats[single.name]["cost"], "half-cost": 0.5 * stats[single.name]["cost"]}
        if table.has_confidence():
            found += learn_cascades(table, style, caps, self.config.seed)
            found += await self._learn_program_cascades(single, caps)
        else:
            self.notes.append("logprob cascades skipped: the endpoint returned no token logprobs")
        for candidate, figures in found:
            stats[candidate.name] = figures
        return [c for c, _ in found]

    async def _learn_program_cascades(
        self, single: Candidate, caps: dict[str, float]
    ) -> list[tuple[Candidate, dict[str, Any]]]:
        """The best single model's own program first, its step-by-step answer when the program is unsure:
        the program path is completed on the search split to fit the threshold (counted as ``learned``
        evaluations, reported beside the search's own)."""
        model = single.assignment["solver"]
        program = next(
            (c for c in self.space if c.template == "program" and c.assignment["programmer"] == model), None
        )
        if program is None or single.params.get("style") != "step":
            return []
        tasks = self.split.search
        await self.evaluator.run([(program, t) for t in tasks], "learned")
        table = program_table(program, single, tasks, lambda c, t: self.evaluator.results[(c.name, t.id)])
        return learn_program_cascades(table, caps, self.config.seed)

    def _self_consistency(
        self, stats: dict[str, dict[str, Any]], best: Candidate, single: Candidate
    ) -> Candidate | None:
        """Self-consistency of the best single model at about the chosen path's search-split cost."""
        k, fits = self_consistency_k(stats[best.name]["cost"], stats[single.name]["cost"], VOTE_KS)
        if not fits and any(c.template == "vote" for c in self.space):
            self.notes.append(
                f"self-consistency at equal cost: even k={k} costs more than the chosen path; vote@{k} is shown"
            )
        model, style = single.assignment["solver"], single.params["style"]
        return next(
            (
                c
                for c in self.space
                if c.template == "vote"
                and c.params["k"] == k
                and c.assignment["voter"] == model
                and c.params["style"] == style
            ),
            None,
        )

    def _simple_baselines(
        self,
        best: Candidate,
        single: Candidate,
        singles: list[Candidate],
        baselines: dict[str, Candidate | None],
        stats: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        """The held-out comparison with the simple baselines (see ``baselines``)."""
        heldout = self.split.heldout

        def records(c: Candidate) -> list[dict[str, Any]]:
            return self.evaluator.records(c, heldout)

        style = [c for c in singles if c.params.get("style") == single.params["style"]]
        cheapest = style[0] if style else single  # the space lists models cheapest first
        a, b, p = random_mix(singles, stats, stats[best.name]["cost"])
        vote = baselines.get("self_consistency")
        table: dict[str, Any] = {
            "best_single": (single.name, records(single)),
            "cheapest_model": (cheapest.name, records(cheapest)),
            "self_consistency_equal_cost": (vote.name, records(vote)) if vote is not None else None,
            "random_routing_equal_cost": random_routing(a, b, p, records(a), records(b)),
            "oracle_router": oracle({c.name: records(c) for c in singles}),
        }
        return compare_all(best, records(best), table)

    async def _baselines(self, stats: dict[str, dict[str, Any]]) -> dict[str, Candidate | None]:
        """Best single model (every single candidate completed on the search split, counted apart from
        the search), self-consistency with it, and the all-models cheapest-first cascade."""
        singles = self.singles
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
