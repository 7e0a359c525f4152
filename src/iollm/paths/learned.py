"""Paths learned from the search split: routers over N models (kNN, matrix factorisation) on the models'
own embeddings, and cascades whose escalation thresholds on the cheap model's token log-probabilities
are fitted under a cost cap (FrugalGPT).

Everything is learned from evaluations the search has already made: every single-model candidate is
completed on the search split (the best-single baseline), which gives, per task and model, the score,
the cost and the model's confidence. Routing or cascading a task is then a lookup, so a learned path's
search-split figures cost no model call. They are cross-validated (fitted on 4/5 of the tasks, scored on
the other fifth, five times), so a learned path competes with the raced ones on equal terms; the state
put in the graph is fitted on all search tasks. Held-out tasks are run for real, through the graph.
"""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .candidate import Candidate, short
from .clients import CallResult, ModelClient
from .confidence import METRICS
from .graph import SCHEMA, parse_graph
from .pricing import PriceBook
from .routers import knn, mf
from .space import program_cascade_node
from .stats import bounds
from .task import Task

FOLDS = 5
COST_WEIGHTS = (0.0, 0.1, 0.3)  # router operating points: predicted score less weight x relative cost
EMBED_BATCH = 16


@dataclass
class Table:
    """Per search task and model (cheapest first): score, cost, latency and confidence of the single
    model's answer, the material every learned path is fitted on."""

    models: list[str]
    singles: list[Candidate]
    tasks: list[Task]
    scores: np.ndarray  # tasks x models
    costs: np.ndarray
    latency: np.ndarray
    confidence: dict[str, np.ndarray]  # metric -> tasks x models (nan: none)

    @classmethod
    def from_records(
        cls, singles: Sequence[Candidate], tasks: Sequence[Task], record: Callable[[Candidate, Task], dict]
    ) -> Table:
        rows = [[record(c, t) for c in singles] for t in tasks]

        def grid(key: Callable[[dict], float]) -> np.ndarray:
            return np.array([[key(r) for r in row] for row in rows], dtype=float)

        confidence = {m: grid(lambda r, m=m: (r.get("confidence") or {}).get(m, np.nan)) for m in METRICS}
        return cls(
            [c.assignment.get("solver") or c.assignment["programmer"] for c in singles],
            list(singles),
            list(tasks),
            grid(lambda r: r["score"]),
            grid(lambda r: r["cost"]),
            grid(lambda r: r["latency_s"]),
            confidence,
        )

    def has_confidence(self) -> bool:
        return any(not np.isnan(v).all() for v in self.confidence.values())


def figures(scores: Sequence[float], costs: Sequence[float], latency: Sequence[float]) -> dict[str, Any]:
    """The search-split figures racing keeps per candidate (see ``Evaluator.figures``)."""
    b = bounds(list(scores))
    n = max(1, len(scores))
    return {
        "n": len(scores),
        "quality": b.mean,
        "low": b.low,
        "high": b.high,
        "cost": float(sum(costs)) / n,
        "latency_s": float(sum(latency)) / n,
        "cross_validated": True,
    }


def folds(n: int, seed: int, k: int = FOLDS) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i::k] for i in range(min(k, n))]


# ---------------------------------------------------------------------------------------------------
# Routers


def route_graph(
    name: str, kind: str, state: dict[str, Any], embed_model: str, singles: Sequence[Candidate]
) -> dict:
    """A route node on the task's embedding, one branch per model: that model's single-model node."""
    nodes: list[dict[str, Any]] = [
        {
            "id": "route",
            "kind": "route",
            "router": kind,
            "embed_model": embed_model,
            "on": "{{input}}",
            "state": state,
        }
    ]
    edges: list[dict[str, Any]] = []
    for i, single in enumerate(singles):
        node = copy.deepcopy(next(n for n in single.graph["nodes"] if n["kind"] == "model"))
        node["id"] = f"solve{i + 1}"
        nodes.append(node)
        edges += [
            {"from": "route", "to": node["id"], "branch": single.assignment["solver"]},
            {"from": node["id"], "to": "out"},
        ]
    graph = {
        "schema": SCHEMA,
        "name": name,
        "description": f"{kind} router on {short(embed_model)} embeddings, trained on the search split",
        "nodes": [*nodes, {"id": "out", "kind": "output"}],
        "edges": edges,
    }
    parse_graph(graph)
    return graph


TRAINERS: dict[str, Callable[..., dict[str, Any]]] = {
    "knn": lambda x, y, models, costs, w, seed: knn.train(x, y, models, costs, cost_weight=w, seed=seed),
    "mf": lambda x, y, models, costs, w, seed: mf.train(x, y, models, costs, cost_weight=w, seed=seed),
}
ROUTE = {"knn": knn.route, "mf": mf.route}


def routed(kind: str, table: Table, vectors: np.ndarray, weight: float, seed: int) -> list[int]:
    """Out-of-fold choice (model index) per task."""
    picks = [0] * len(table.tasks)
    mean_cost = table.costs.mean(axis=0)
    for test in folds(len(table.tasks), seed):
        train = [i for i in range(len(table.tasks)) if i not in set(test)]
        if not train:
            continue
        state = TRAINERS[kind](vectors[train], table.scores[train], table.models, mean_cost, weight, seed)
        for i in test:
            picks[i] = table.models.index(ROUTE[kind](state, vectors[i]))
    return picks


def learn_routers(
    table: Table, vectors: np.ndarray, embed_cost: np.ndarray, embed_model: str, style: str, seed: int
) -> list[tuple[Candidate, dict[str, Any]]]:
    """kNN and MF routers at a few cost weights: (candidate, cross-validated search figures)."""
    out = []
    rows = np.arange(len(table.tasks))
    mean_cost = table.costs.mean(axis=0)
    for kind, weight in itertools.product(TRAINERS, COST_WEIGHTS):
        picks = np.array(routed(kind, table, vectors, weight, seed))
        stats = figures(
            table.scores[rows, picks],
            table.costs[rows, picks] + embed_cost,
            table.latency[rows, picks],
        )
        state = TRAINERS[kind](vectors, table.scores, table.models, mean_cost, weight, seed)
        name = f"route:{kind}:{style}(w={weight:g})"
        graph = route_graph(name, kind, state, embed_model, table.singles)
        assignment = {"models": list(table.models), "embed_model": embed_model}
        params = {"style": style, "router": kind, "cost_weight": weight}
        out.append((Candidate(name, "route", assignment, params, graph), stats))
    return out


# ---------------------------------------------------------------------------------------------------
# Cascades


@dataclass(frozen=True)
class CascadeFit:
    chain: tuple[int, ...]  # model indices, cheapest first
    metric: str
    thresholds: tuple[float, ...]  # one per escalating stage


def run_cascade(
    table: Table, fit: CascadeFit, rows: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, costs and latencies of the cascade on ``rows``: stage i answers when its confidence reaches
    its threshold (no confidence escalates), the last stage always answers; each stage run is paid."""
    conf = table.confidence[fit.metric]
    scores, costs, latency = [], [], []
    for r in rows:
        cost = late = 0.0
        for stage, m in enumerate(fit.chain):
            cost += table.costs[r, m]
            late += table.latency[r, m]
            last = stage == len(fit.chain) - 1
            if last or (not np.isnan(conf[r, m]) and conf[r, m] >= fit.thresholds[stage]):
                scores.append(table.scores[r, m])
                break
        costs.append(cost)
        latency.append(late)
    return np.array(scores), np.array(costs), np.array(latency)


def _levels(values: np.ndarray) -> list[float]:
    """Threshold choices: deciles of the observed confidences, plus 'always accept' and 'never'."""
    seen = values[~np.isnan(values)]
    if seen.size == 0:
        return [0.0]
    quantiles = np.quantile(seen, np.linspace(0.1, 0.9, 9))
    return sorted({round(float(q), 5) for q in quantiles} | {round(float(seen.min()) - 1.0, 5), 0.0})


def fit_cascade(table: Table, chain: tuple[int, ...], rows: Sequence[int], cap: float) -> CascadeFit | None:
    """The metric and thresholds with the best mean score on ``rows`` at a mean cost within ``cap``
    (ties: cheaper); None when no setting fits the cap."""
    best: tuple[float, float] | None = None
    found = None
    for metric in METRICS:
        grids = [_levels(table.confidence[metric][rows, m]) for m in chain[:-1]]
        for thresholds in itertools.product(*grids):
            fit = CascadeFit(chain, metric, tuple(thresholds))
            scores, costs, _ = run_cascade(table, fit, rows)
            if costs.mean() > cap * (1 + 1e-9) + 1e-9:  # the cap is a mean itself: allow rounding
                continue
            key = (scores.mean(), -costs.mean())
            if best is None or key > best:
                best, found = key, fit
    return found


def cascade_graph(name: str, fit: CascadeFit, table: Table) -> dict[str, Any]:
    """A logprob cascade node with the single models' prompt and parameters (so it shares their calls)."""
    first = next(n for n in table.singles[fit.chain[0]].graph["nodes"] if n["kind"] == "model")
    node = {
        "id": "cascade",
        "kind": "cascade",
        "models": [table.models[m] for m in fit.chain],
        "prompt": first["prompt"],
        "params": {k: v for k, v in first["params"].items() if k != "temperature"},
        "check": "logprob",
        "metric": fit.metric,
        "threshold": list(fit.thresholds),
    }
    graph = {
        "schema": SCHEMA,
        "name": name,
        "description": "cheapest model first; escalate when its answer's token log-probability is below "
        "a threshold fitted on the search split",
        "nodes": [node, {"id": "out", "kind": "output"}],
        "edges": [{"from": "cascade", "to": "out"}],
    }
    parse_graph(graph)
    return graph


def learn_cascades(
    table: Table, style: str, cost_caps: dict[str, float], seed: int
) -> list[tuple[Candidate, dict[str, Any]]]:
    """Per chain (each cheap -> dearer pair and the whole price order) and cost cap: the fitted cascade and
    its cross-validated figures (the thresholds refitted on each fold's training tasks)."""
    k = len(table.models)
    chains = [(a, b) for a in range(k) for b in range(a + 1, k)] + ([tuple(range(k))] if k > 2 else [])
    out = []
    for chain, (label, cap) in itertools.product(chains, cost_caps.items()):
        fitted = _cross_validated(table, chain, cap, seed)
        if fitted is None:
            continue
        whole, stats = fitted
        labels = ">".join(short(table.models[m]) for m in chain)
        name = f"cascade-logprob:{style}@{label}({labels})"
        assignment = {"models": [table.models[m] for m in chain]}
        params = {
            "style": style,
            "check": "logprob",
            "metric": whole.metric,
            "threshold": list(whole.thresholds),
            "cost_cap": label,
        }
        candidate = Candidate(name, "cascade-logprob", assignment, params, cascade_graph(name, whole, table))
        out.append((candidate, stats))
    return out


def _cross_validated(
    table: Table, chain: tuple[int, ...], cap: float, seed: int
) -> tuple[CascadeFit, dict[str, Any]] | None:
    """The cascade fitted on all tasks, and its figures with thresholds refitted on each fold's training
    tasks and scored on the fold; None when no setting fits the cost cap."""
    n = len(table.tasks)
    whole = fit_cascade(table, chain, range(n), cap)
    if whole is None:
        return None
    parts: list[tuple[np.ndarray, ...]] = []
    for test in folds(n, seed):
        train = [i for i in range(n) if i not in set(test)]
        fit = fit_cascade(table, chain, train, cap) or whole
        parts.append(run_cascade(table, fit, test))
    scores, costs, latency = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return whole, figures(scores, costs, latency)


def program_table(
    program: Candidate, single: Candidate, tasks: Sequence[Task], record: Callable[[Candidate, Task], dict]
) -> Table:
    """A two-stage table: the program path's records, then the single model's. A program that printed
    nothing has no confidence, so a cascade always escalates it (as the executor does)."""
    table = Table.from_records([program, single], tasks, record)
    printed = np.array([bool(record(program, t).get("answer")) for t in tasks])
    for values in table.confidence.values():
        values[~printed, 0] = np.nan
    return table


def learn_program_cascades(
    table: Table, cost_caps: dict[str, float], seed: int
) -> list[tuple[Candidate, dict[str, Any]]]:
    """Program first, then the single model step by step, escalating when the program fails, prints
    nothing, or its tokens' log-probability is below a threshold fitted under each cost cap (the
    FrugalGPT rule between two ways of answering rather than two models); cross-validated figures."""
    program_node, step_node = (
        next(n for n in c.graph["nodes"] if n["kind"] == "model") for c in table.singles
    )
    out = []
    for label, cap in cost_caps.items():
        fitted = _cross_validated(table, (0, 1), cap, seed)
        if fitted is None:
            continue
        whole, stats = fitted
        check = {"check": "logprob", "metric": whole.metric, "threshold": list(whole.thresholds)}
        a, b = (short(m) for m in table.models)
        name = f"program-cascade-logprob@{label}({a}>{b})"
        graph = {
            "schema": SCHEMA,
            "name": name,
            "description": "a program first; the step-by-step answer when the program fails, prints nothing "
            "or its log-probability is below a threshold fitted on the search split",
            "nodes": [program_cascade_node(program_node, step_node, check), {"id": "out", "kind": "output"}],
            "edges": [{"from": "cascade", "to": "out"}],
        }
        parse_graph(graph)
        assignment = {"programmer": table.models[0], "solver": table.models[1]}
        params = {"check": "logprob", **check, "cost_cap": label}
        out.append((Candidate(name, "program-cascade-logprob", assignment, params, graph), stats))
    return out


# ---------------------------------------------------------------------------------------------------
# Embeddings


async def embed_tasks(
    client: ModelClient, model: str, tasks: Sequence[Task], prices: PriceBook
) -> tuple[np.ndarray, np.ndarray]:
    """Each task's embedding by ``model`` (the router's features) and what embedding it costs."""
    embed = getattr(client, "embed", None)
    if embed is None:
        raise LookupError("the client has no embeddings endpoint")
    vectors: list[list[float]] = []
    costs: list[float] = []
    for start in range(0, len(tasks), EMBED_BATCH):
        batch = [t.input for t in tasks[start : start + EMBED_BATCH]]
        result = await embed(model, batch)
        vectors += result.vectors
        tokens = [max(1, len(text.split())) for text in batch]  # share the batch's price by length
        total = sum(tokens)
        for share in tokens:
            part = CallResult(
                model, "", round(result.prompt_tokens * share / total), 0, result.seconds * share / total
            )
            costs.append(prices.cost(part))
    return np.asarray(vectors, dtype=float), np.asarray(costs, dtype=float)
