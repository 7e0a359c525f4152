"""Evaluating graphs on tasks: the unit of work, and the evaluations of one search.

The unit of work is one graph on a batch of tasks (``evaluate_unit``): a pure function of its arguments
returning JSON, so the compute layer can run it on a provider unchanged. Inside one search an
``Evaluator`` runs (candidate, task) pairs on a shared, cached client, so identical calls of different
candidates are made once, and keeps every record for racing and the final figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .candidate import Candidate
from .catalog import load_suite
from .checkers import check
from .clients import CachedClient, CallCache, ModelClient, OpenAIClient, SerialPerModel
from .confidence import confidences
from .executor import Executor
from .graph import Graph, parse_graph
from .pricing import PriceBook, prices_from_json
from .sandbox import Sandbox
from .stats import bounds
from .task import Task

Progress = Callable[[str, int, int], None]  # (phase, done, total)
MODEL_KINDS = ("model", "vote", "cascade")


class SearchError(RuntimeError):
    """A search that cannot go on: a budget below the space, or an endpoint whose every call fails."""


def _node_error(result: Any, graph: Graph) -> str | None:
    """The first failure of a model-calling node (an endpoint problem, not a wrong answer)."""
    for node in graph.nodes:
        trace = result.nodes[node.id]
        learned_route = node.kind == "route" and node.get("embed_model")
        if (node.kind in MODEL_KINDS or learned_route) and trace.status == "error":
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
        # the first call's confidence: a single model's, or a cascade's first stage (fits thresholds)
        "confidence": confidences(calls[0].logprobs) if calls else None,
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

    def call_counts(self) -> tuple[int, int]:
        """Model calls made and replayed from the cache: the client's own counters where it keeps them,
        otherwise summed from the records."""
        made = getattr(self.client, "calls_made", None)
        cached = getattr(self.client, "calls_cached", None)
        if made is None or cached is None:
            return self._recorded_calls()
        return made, cached

    def _recorded_calls(self) -> tuple[int, int]:
        records = self.results.values()
        return sum(r["calls_made"] for r in records), sum(r["calls_cached"] for r in records)


# What ``SearchConfig.evaluator`` holds: called as ``Evaluator`` is, (client, prices, seed, workers,
# on_progress=...); ``functools.partial(ClusterEvaluator, node=..., suite=...)`` evaluates on the providers.
EvaluatorFactory = Callable[..., Evaluator]
