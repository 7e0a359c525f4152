"""Racing on the compute pool (`iollm path search --on-cluster`): evaluations become path-eval jobs.

A racing round evaluates every live candidate on the same new tasks, so one round is one job whose
units (graph x task batch) Dask spreads over the providers. The records that come back are exactly
what a local evaluation files, so racing, statistics and the report are unchanged. The job ids are
kept: the leaderboard submission names them, and the providers that ran them share a breakthrough's
reward. Each job's idempotency key is a hash of its spec, so a search that is run again after an
interruption picks up the jobs it already submitted instead of paying for them twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..protocol import NodeClient
from .evaluation import Evaluator, SearchError
from .pricing import prices_to_json
from .space import Candidate
from .task import Task

POLL_SECONDS = 0.25
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class ClusterEvaluator(Evaluator):
    """An Evaluator whose pairs run on the node's providers instead of this process."""

    node: NodeClient | None = None
    suite: str = "inline"
    batch_size: int = 4
    jobs: list[str] = field(default_factory=list)

    async def run(self, pairs: Sequence[tuple[Candidate, Task]], phase: str) -> None:
        todo: dict[str, tuple[Candidate, list[Task]]] = {}
        for candidate, task in pairs:
            if (candidate.name, task.id) in self.results:
                continue
            entry = todo.setdefault(candidate.name, (candidate, []))
            if task.id not in {t.id for t in entry[1]}:
                entry[1].append(task)
        groups: dict[tuple[str, ...], list[tuple[Candidate, list[Task]]]] = {}
        for candidate, tasks in todo.values():
            groups.setdefault(tuple(t.id for t in tasks), []).append((candidate, tasks))
        total = sum(len(tasks) for _, tasks in todo.values())
        done = 0
        for group in groups.values():
            done = await self._run_group(group, phase, done, total)
        self.spent[phase] = self.spent.get(phase, 0) + total

    async def _run_group(
        self, group: list[tuple[Candidate, list[Task]]], phase: str, done: int, total: int
    ) -> int:
        """One job for candidates sharing a task list; returns the evaluations done so far."""
        tasks = group[0][1]
        spec = {
            "graphs": [{"name": c.name, "graph": c.graph} for c, _ in group],
            "tasks": [t.to_json() for t in tasks],
            "seed": self.seed,
            "batch_size": self.batch_size,
            "prices": prices_to_json(self.prices),
            "suite": self.suite,
        }
        key = "path-search-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:40]
        job = await asyncio.to_thread(self._node().submit_job, "path-eval", spec, key)
        self.jobs.append(job["id"])
        size = len(group) * len(tasks)
        while job["state"] not in TERMINAL:
            await asyncio.sleep(POLL_SECONDS)
            job = await asyncio.to_thread(self._node().job, job["id"])
            units = job.get("units") or {}
            if self.on_progress and units.get("total"):
                self.on_progress(phase, done + size * units["done"] // units["total"], total)
        if job["state"] != "succeeded":
            raise SearchError(
                f"path-eval job {job['id']} {job['state']}: {job.get('error') or 'no reason given'}; "
                f"see `iollm job logs {job['id']}`"
            )
        by_name = {c.name: c for c, _ in group}
        for graph in job["result"]["graphs"]:
            candidate = by_name[graph["name"]]
            for record in graph["records"]:
                self.results[(candidate.name, record["id"])] = record
        missing = [(c.name, t.id) for c, ts in group for t in ts if (c.name, t.id) not in self.results]
        if missing:
            raise SearchError(f"path-eval job {job['id']} returned no result for {missing[0]}")
        if self.on_progress:
            self.on_progress(phase, done + size, total)
        return done + size

    def call_counts(self) -> tuple[int, int]:
        """Counted from the records: the calls were made on the providers, not through this client."""
        return self._recorded_calls()

    def _node(self) -> NodeClient:
        if self.node is None:
            raise SearchError("the cluster evaluator needs a node client")
        return self.node
