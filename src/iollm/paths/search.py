"""Search for the best path on a suite: racing with successive halving over the space, the Pareto front of
quality, cost and latency, then final figures from the held-out split only.

The unit of work is one graph on a batch of tasks (``evaluate_unit``): a pure function of its arguments
returning JSON, so the compute layer can run it on a provider unchanged. Inside one search the same
unit runs on a shared, cached client so that identical calls of different candidates are made once.

The held-out split is passed to nothing before the search has chosen: ``Search.run`` evaluates it only in
its final phase, for the chosen path, the front and the baselines.

Racing (``race``), with B the budget in (candidate, task) evaluations:

1. the search tasks are shuffled with the seed; candidates are ordered cheapest template first;
2. ``plan_schedule`` picks the gentlest halving rate eta (2, 3, 4, ...) and the largest first batch b0
   (4, 3, 2; 1 as a last resort) whose nominal run fits B;
3. each round evaluates every alive candidate on the next batch of tasks (all on the same tasks, so
   comparisons are paired), then, over all tasks seen so far, computes mean quality with 95 % bounds
   (Wilson for pass/fail scores, empirical Bernstein otherwise), mean cost and mean latency;
4. it drops every candidate whose upper bound is below the lower bound of another candidate that costs no
   more (clearly dominated); of the rest it keeps the top ceil(n/eta) by upper bound (ties: mean, then
   cheaper), plus the quality/cost Pareto front of those whose upper bound reaches the best lower bound;
5. the batch doubles; the race stops when one candidate is left, the search tasks are used up, or the
   next batch no longer fits the budget. The best finalist (highest quality, then cheaper) is chosen.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .catalog import load_suite
from .checkers import check
from .clients import CachedClient, CallCache, CallResult, ModelClient, OpenAIClient
from .executor import Executor
from .graph import Graph, parse_graph
from .pricing import COMPUTE_MICRO_PER_SECOND, Price, PriceBook
from .sandbox import Sandbox
from .space import Candidate, build_space, calls_per_task, projected_calls
from .stats import bootstrap_ci, bounds, paired_bootstrap, pareto_front
from .suites import Suite, SuiteSplit, Task

Progress = Callable[[str, int, int], None]  # (phase, done, total)
MODEL_KINDS = ("model", "vote", "cascade")


class SearchError(RuntimeError):
    """A search that cannot go on: a budget below the space, or an endpoint whose every call fails."""


# ---------------------------------------------------------------------------------------------------
# Prices


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


# ---------------------------------------------------------------------------------------------------
# The unit of work


class SerialPerModel:
    """One call per model at a time: the node runs one generation per loaded model anyway, and queueing
    there would be timed as compute seconds (and priced)."""

    def __init__(self, inner: ModelClient) -> None:
        self.inner = inner
        self._gates: dict[str, asyncio.Semaphore] = {}

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        gate = self._gates.setdefault(model, asyncio.Semaphore(1))
        async with gate:
            return await self.inner.chat(model, messages, params)

    async def revision(self, model: str) -> str:
        revision = getattr(self.inner, "revision", None)
        return await revision(model) if revision is not None else model


def _node_error(result: Any, graph: Graph) -> str | None:
    """The first failure of a model-calling node (an endpoint problem, not a wrong answer)."""
    for node in graph.nodes:
        trace = result.nodes[node.id]
        if node.kind in MODEL_KINDS and trace.status == "error":
            return f"{node.id}: {trace.error}"
    return None


async def evaluate_task(executor: Executor, graph: Graph, task: Task, sandbox: Sandbox) -> dict[str, Any]:
    """Run one graph on one task and score it; every figure the search needs, JSON-ready."""
    result = await executor.run(graph, task.input)
    if task.checker == "python_tests":
        verdict = await asyncio.to_thread(check, task, result.answer, sandbox)
    else:
        verdict = check(task, result.answer, sandbox)
    calls = result.calls
    return {
        "id": task.id,
        "score": float(verdict.score),
        "cost": int(result.cost),
        "cost_paid": sum(executor.prices.cost(c) for c in calls if not c.cached),
        "latency_s": round(result.latency, 4),
        "compute_s": round(result.compute_seconds, 4),
        "calls": len(calls),
        "calls_made": sum(1 for c in calls if not c.cached),
        "calls_cached": sum(1 for c in calls if c.cached),
        "prompt_tokens": sum(c.prompt_tokens for c in calls),
        "completion_tokens": sum(c.completion_tokens for c in calls),
        "answer": result.answer[:2000],
        "error": _node_error(result, graph),
    }


def _summary(graph: Graph, records: list[dict[str, Any]]) -> dict[str, Any]:
    n = max(1, len(records))
    return {
        "graph_hash": graph.canonical_hash(),
        "tasks": records,
        "score": sum(r["score"] for r in records) / n,
        "cost_per_task": sum(r["cost"] for r in records) / n,
        "calls_made": sum(r["calls_made"] for r in records),
        "calls_cached": sum(r["calls_cached"] for r in records),
    }


async def evaluate_unit_async(
    graph_json: dict[str, Any],
    tasks: Sequence[Task],
    client: ModelClient,
    prices: PriceBook,
    sandbox: Sandbox | None = None,
    seed: int = 0,
    concurrency: int = 4,
) -> dict[str, Any]:
    """``evaluate_unit`` on a client the caller owns (shared across units within one search)."""
    graph = parse_graph(graph_json)
    sandbox = sandbox or Sandbox(timeout_s=10)
    executor = Executor(client, prices, sandbox, seed)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(task: Task) -> dict[str, Any]:
        async with gate:
            return await evaluate_task(executor, graph, task, sandbox)

    return _summary(graph, list(await asyncio.gather(*(one(t) for t in tasks))))


def evaluate_unit(
    graph_json: dict[str, Any],
    task_ids: Sequence[str],
    suite_ref: str,
    endpoint: str,
    token: str | None = None,
    seed: int = 0,
    *,
    prices: dict[str, Any] | None = None,
    cache_path: str | None = None,
    concurrency: int = 4,
) -> dict[str, Any]:
    """Evaluate one graph on some tasks of a suite against an OpenAI-compatible ``endpoint``; returns
    per-task scores, costs (micro-credits, with ``prices`` as from ``prices_to_json``), latencies and call
    counts as JSON. ``cache_path`` (a call cache file) makes repeated calls free. Self-contained so the
    compute layer can ship it to a provider as is."""
    suite = load_suite(suite_ref)
    by_id = {t.id: t for t in suite.tasks}
    missing = [t for t in task_ids if t not in by_id]
    if missing:
        raise KeyError(f"suite {suite_ref!r} has no task {missing[0]!r}")
    tasks = [by_id[t] for t in task_ids]

    async def main() -> dict[str, Any]:
        inner = OpenAIClient(endpoint, token, concurrency=concurrency)
        client: ModelClient = SerialPerModel(inner)
        if cache_path:
            client = CachedClient(client, CallCache(Path(cache_path)))
        try:
            return await evaluate_unit_async(
                graph_json, tasks, client, prices_from_json(prices), None, seed, concurrency
            )
        finally:
            await inner.close()

    result = asyncio.run(main())
    return {"suite": suite_ref, "seed": seed, "endpoint": endpoint, **result}


# ---------------------------------------------------------------------------------------------------
# Evaluations within one search


@dataclass
class Evaluator:
    """Evaluates (candidate, task) pairs on one shared client, remembering every result; counts
    evaluations per phase so the search's own spending is reported apart from the final figures."""

    client: ModelClient
    prices: PriceBook
    seed: int = 0
    workers: int = 4
    sandbox: Sandbox = field(default_factory=lambda: Sandbox(timeout_s=10))
    on_progress: Progress | None = None
    results: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    _graphs: dict[str, Graph] = field(default_factory=dict)

    def graph(self, candidate: Candidate) -> Graph:
        if candidate.name not in self._graphs:
            self._graphs[candidate.name] = parse_graph(candidate.graph)
        return self._graphs[candidate.name]

    async def run(self, pairs: Sequence[tuple[Candidate, Task]], phase: str) -> None:
        """Evaluate the pairs not evaluated before; ``phase`` is what the new evaluations are counted as."""
        unique = {(c.name, t.id): (c, t) for c, t in pairs if (c.name, t.id) not in self.results}
        todo = list(unique.values())
        executor = Executor(self.client, self.prices, self.sandbox, self.seed)
        gate = asyncio.Semaphore(max(1, self.workers))
        done = 0

        async def one(candidate: Candidate, task: Task) -> None:
            nonlocal done
            async with gate:
                record = await evaluate_task(executor, self.graph(candidate), task, self.sandbox)
            self.results[(candidate.name, task.id)] = record
            done += 1
            if self.on_progress:
                self.on_progress(phase, done, len(todo))

        await asyncio.gather(*(one(c, t) for c, t in todo))
        self.spent[phase] = self.spent.get(phase, 0) + len(todo)
        errors = [self.results[(c.name, t.id)]["error"] for c, t in todo]
        if todo and all(errors):
            raise SearchError(f"every evaluation failed to call its models; first error: {errors[0]}")

    def records(self, candidate: Candidate, tasks: Sequence[Task]) -> list[dict[str, Any]]:
        return [self.results[(candidate.name, t.id)] for t in tasks if (candidate.name, t.id) in self.results]

    def figures(self, candidate: Candidate, tasks: Sequence[Task]) -> dict[str, Any]:
        """Mean quality with confidence bounds, mean cost and latency over the evaluated ``tasks``."""
        records = self.records(candidate, tasks)
        b = bounds([r["score"] for r in records])
        n = max(1, len(records))
        return {
            "n": len(records),
            "quality": b.mean,
            "low": b.low,
            "high": b.high,
            "cost": sum(r["cost"] for r in records) / n,
            "latency_s": sum(r["latency_s"] for r in records) / n,
        }


# ---------------------------------------------------------------------------------------------------
# Racing


@dataclass(frozen=True)
class Schedule:
    """Successive halving plan: the first batch size, the fraction kept each round (1/eta) and the
    evaluations it needs if nothing is dropped early."""

    first_batch: int
    eta: int
    projected: int


def plan_schedule(n_candidates: int, n_tasks: int, budget: int) -> Schedule:
    """The gentlest halving (smallest eta), then the largest first batch, whose nominal run - batches
    doubling, 1/eta of the candidates kept per round, until one is left or the tasks run out - fits the
    budget. A first batch of one task (a single pass/fail per candidate) is the last resort."""

    def cost(b0: int, eta: int) -> int:
        alive, batch, seen, total = n_candidates, b0, 0, 0
        while seen < n_tasks:
            size = min(batch, n_tasks - seen)
            total += alive * size
            seen += size
            if alive == 1:
                break
            alive, batch = max(1, math.ceil(alive / eta)), batch * 2
        return total

    options = [(eta, b0) for eta in (2, 3, 4) for b0 in (4, 3, 2)]
    options += [(eta, b0) for eta in (6, 8) for b0 in (3, 2)] + [(eta, 1) for eta in (2, 3, 4, 6, 8)]
    for eta, b0 in options:
        if cost(b0, eta) <= budget:
            return Schedule(b0, eta, cost(b0, eta))
    return Schedule(1, 8, cost(1, 8))


@dataclass
class Round:
    index: int
    tasks_seen: int
    batch: int
    evaluated: int
    alive: int
    dropped_dominated: list[str]
    kept: list[str]

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _rank_key(figures: dict[str, Any], name: str) -> tuple[float, float, float, str]:
    return (-figures["high"], -figures["quality"], figures["cost"], name)


def _cut(
    alive: list[Candidate], stats: dict[str, dict[str, Any]], eta: int
) -> tuple[list[str], list[Candidate]]:
    """One elimination step: drop the clearly dominated, keep the front and the optimistic top 1/eta."""
    dominated = [
        c.name
        for c in alive
        if any(
            stats[d.name]["low"] > stats[c.name]["high"] and stats[d.name]["cost"] <= stats[c.name]["cost"]
            for d in alive
            if d is not c
        )
    ]
    survivors = [c for c in alive if c.name not in dominated]
    best_low = max((stats[c.name]["low"] for c in survivors), default=0.0)
    contenders = [c for c in survivors if stats[c.name]["high"] >= best_low]
    points = [(stats[c.name]["quality"], stats[c.name]["cost"]) for c in contenders]
    front = {contenders[i].name for i in pareto_front(points)}
    ranked = sorted(survivors, key=lambda c: _rank_key(stats[c.name], c.name))
    top = {c.name for c in ranked[: max(1, math.ceil(len(survivors) / eta))]}
    return dominated, [c for c in ranked if c.name in top or c.name in front]


async def race(
    candidates: list[Candidate],
    tasks: list[Task],
    evaluator: Evaluator,
    budget: int,
    seed: int = 0,
) -> tuple[list[Candidate], list[Round], Schedule]:
    """Successive halving with confidence bounds on the search tasks; returns the finalists (alive at
    the end, all evaluated on the same tasks), the rounds, and the schedule used."""
    if budget < len(candidates):
        raise SearchError(
            f"a budget of {budget} evaluations cannot evaluate each of the {len(candidates)} candidates once; "
            f"use --budget {len(candidates)} or more"
        )
    order = list(tasks)
    random.Random(seed).shuffle(order)
    schedule = plan_schedule(len(candidates), len(order), budget)
    alive = sorted(candidates, key=lambda c: (calls_per_task(c, seed), c.name))  # cheapest templates first
    seen, batch, used, rounds = 0, schedule.first_batch, 0, []
    while seen < len(order) and (len(alive) > 1 or not rounds):
        size = min(batch, len(order) - seen, (budget - used) // len(alive))
        if size < 1:
            break
        new = order[seen : seen + size]
        await evaluator.run([(c, t) for t in new for c in alive], "search")
        used += size * len(alive)
        seen += size
        stats = {c.name: evaluator.figures(c, order[:seen]) for c in alive}
        finished = seen >= len(order) or len(alive) == 1
        dropped, kept = ([], alive) if finished else _cut(alive, stats, schedule.eta)
        rounds.append(
            Round(len(rounds) + 1, seen, size, size * len(alive), len(kept), dropped, [c.name for c in kept])
        )
        if finished:
            break
        alive, batch = kept, batch * 2
    return alive, rounds, schedule


def front_pool(
    space: Sequence[Candidate], stats: dict[str, dict[str, Any]], rounds: list[Round]
) -> list[Candidate]:
    """The search-split Pareto front of quality, cost and latency among the candidates that survived the
    first two cuts (so every point rests on a fair number of tasks); its members get held-out figures."""
    depth = rounds[min(2, len(rounds) - 1)].tasks_seen if rounds else 0
    pool = [c for c in space if stats[c.name]["n"] >= max(1, depth)]
    points = [
        (stats[c.name]["quality"], stats[c.name]["cost"], _coarse(stats[c.name]["latency_s"])) for c in pool
    ]
    return [pool[i] for i in pareto_front(points)]


def _coarse(seconds: float) -> float:
    """Latency at 0.1 s resolution: sandbox wall time varies by tens of milliseconds between reruns, and
    that must not move a path on or off the front."""
    return round(seconds, 1)


def pick_best(candidates: Sequence[Candidate], stats: dict[str, dict[str, Any]]) -> Candidate:
    """Highest quality; ties go to the cheaper, then the faster."""
    return min(
        candidates,
        key=lambda c: (-stats[c.name]["quality"], stats[c.name]["cost"], stats[c.name]["latency_s"], c.name),
    )


# ---------------------------------------------------------------------------------------------------
# The whole search


@dataclass
class SearchConfig:
    models: list[str]
    suite: Suite
    budget: int | None = None  # evaluations; default 20 % of exhaustive
    workers: int = 4
    seed: int = 0
    heldout_fraction: float = 0.5
    max_tasks: int | None = None
    max_tokens: int | None = None  # caps every call's completion (see build_space)


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
        self.client = client
        self.prices = prices
        self.split: SuiteSplit = config.suite.split(config.seed, config.heldout_fraction, config.max_tasks)
        checker = config.suite.checkers[0] if config.suite.tasks else "exact"
        self.space = build_space(config.models, checker, prices, config.seed, config.max_tokens)
        self.exhaustive = len(self.space) * len(self.split.search)
        # Default: a fifth of exhaustive, rounded down so it never exceeds 20 % (at least one pass).
        self.budget = config.budget or max(len(self.space), self.exhaustive // 5)
        self.evaluator = Evaluator(client, prices, config.seed, config.workers, on_progress=on_progress)

    def preview(self) -> dict[str, Any]:
        """What the search will spend, printed before it starts."""
        calls = projected_calls(self.space, len(self.split.search), self.config.seed)
        schedule = plan_schedule(len(self.space), len(self.split.search), self.budget)
        per_eval = calls["naive"] / max(1, self.exhaustive)
        unique_share = calls["unique"] / max(1, calls["naive"])
        return {
            "space_size": len(self.space),
            "templates": _count(c.template for c in self.space),
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
        return self._result(
            best, front, finalists, baselines, stats, figures, rounds, schedule, time.perf_counter() - started
        )

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

    def _result(self, best, front, finalists, baselines, stats, figures, rounds, schedule, seconds):
        def entry(c: Candidate) -> dict[str, Any]:
            held = figures.get(c.name)
            return {
                "name": c.name,
                "template": c.template,
                "assignment": c.assignment,
                "params": c.params,
                "hash": c.hash,
                "search": _rounded(stats[c.name]),
                **({"heldout": _rounded(held, drop=("scores",))} if held else {}),
            }

        front_points = [
            (
                figures[c.name]["score"],
                figures[c.name]["cost_per_task"],
                _coarse(figures[c.name]["latency_s"]),
            )
            for c in front
        ]
        on_front = {front[i].name for i in pareto_front(front_points)}
        single = baselines["best_single"]
        evaluator = self.evaluator
        client = self.client
        made = getattr(client, "calls_made", None)
        cached = getattr(client, "calls_cached", None)
        if made is None:  # evaluated elsewhere (on the cluster): count from the records
            made = sum(r["calls_made"] for r in evaluator.results.values())
            cached = sum(r["calls_cached"] for r in evaluator.results.values())
        return {
            "suite": self.config.suite.name,
            "suite_source": self.config.suite.source,
            "models": list(self.config.models),
            "prices": prices_to_json(self.prices),
            "seed": self.config.seed,
            "split": {
                "seed": self.split.seed,
                "heldout_fraction": self.split.heldout_fraction,
                "search_size": len(self.split.search),
                "heldout_size": len(self.split.heldout),
                "fingerprint": self.split.fingerprint,
            },
            "space": {"size": len(self.space), "templates": _count(c.template for c in self.space)},
            "budget": self.budget,
            "schedule": schedule.__dict__,
            "rounds": [r.to_json() for r in rounds],
            "evaluations_used": evaluator.spent.get("search", 0),
            "evaluations_exhaustive": self.exhaustive,
            "baseline_evaluations": evaluator.spent.get("baseline", 0),
            "heldout_evaluations": evaluator.spent.get("heldout", 0),
            "calls_made": made,
            "calls_cached": cached,
            "jobs": list(getattr(evaluator, "jobs", [])),
            "best": {**entry(best), "graph": best.graph},
            "heldout": _rounded(figures[best.name], drop=("scores",)),
            "heldout_scores": figures[best.name]["scores"],
            "heldout_task_ids": [t.id for t in self.split.heldout],
            "finalists": [c.name for c in finalists],
            "candidates": [
                {"name": c.name, "template": c.template, **_rounded(stats[c.name])}
                for c in self.space
                if stats[c.name]["n"]
            ],
            "pareto": [{**entry(c), "on_heldout_front": c.name in on_front, "graph": c.graph} for c in front],
            "baselines": {
                k: ({**entry(c), "graph": c.graph} if c is not None else None) for k, c in baselines.items()
            },
            "vs_best_single": compare(best, single, front, stats, figures),
            "economics": economics(best, single, figures, evaluator.results.values()),
            "seconds": round(seconds, 2),
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


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _rounded(figures: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items() if k not in drop}


# ---------------------------------------------------------------------------------------------------
# Entry point for the CLI and the benchmark


async def warm_up(client: ModelClient, models: Sequence[str]) -> None:
    """Load every model with a one-token call (not cached) so no model's load time is timed, and priced,
    as the compute seconds of the first cached call."""
    for model in models:
        await client.chat(model, [{"role": "user", "content": "Hi"}], {"max_tokens": 1, "temperature": 0.0})


def open_client(
    openai_url: str, token: str | None, cache_path: Path | None, concurrency: int = 4
) -> tuple[CachedClient | ModelClient, OpenAIClient]:
    """The search's client: per-model serial calls to ``openai_url`` behind the persistent call cache."""
    inner = OpenAIClient(openai_url, token, concurrency=concurrency)
    serial = SerialPerModel(inner)
    if cache_path is None:
        return serial, inner
    return CachedClient(serial, CallCache(cache_path)), inner
