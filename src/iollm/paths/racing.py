"""Racing: successive halving with confidence bounds over the candidates, on the search split only.

With B the budget in (candidate, task) evaluations, ``race``:

1. shuffles the search tasks with the seed and orders candidates cheapest template first;
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

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .call_plan import calls_per_task
from .candidate import Candidate
from .evaluation import Evaluator, SearchError
from .stats import pareto_front
from .task import Task


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
        (stats[c.name]["quality"], stats[c.name]["cost"], coarse(stats[c.name]["latency_s"])) for c in pool
    ]
    return [pool[i] for i in pareto_front(points)]


def coarse(seconds: float) -> float:
    """Latency at 0.1 s resolution: sandbox wall time varies by tens of milliseconds between reruns, and
    that must not move a path on or off the front."""
    return round(seconds, 1)


def pick_best(candidates: Sequence[Candidate], stats: dict[str, dict[str, Any]]) -> Candidate:
    """Highest quality; ties go to the cheaper, then the faster."""
    return min(
        candidates,
        key=lambda c: (-stats[c.name]["quality"], stats[c.name]["cost"], stats[c.name]["latency_s"], c.name),
    )
