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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from ..protocol import NodeClient
from .candidate import Candidate
from .evaluation import Evaluator, SearchError
from .pricing import prices_to_json
from .task import Task

POLL_SECONDS = 0.25  # between polls of a node that does not long-poll
WAIT_SECONDS = 2.0  # a long-poll answers when the job ends, or after this long with its progress
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
        # Every group's job is submitted at once: the providers work through all of them together, with
        # no idle gap between one job's last unit and the next job's first.
        progress: dict[int, int] = {}

        def report(index: int, evaluations: int) -> None:
            progress[index] = evaluations
            if self.on_progress:
                self.on_progress(phase, sum(progress.values()), total)

        await asyncio.gather(
            *(self._run_group(group, phase, partial(report, i)) for i, group in enumerate(groups.values()))
        )
        self.spent[phase] = self.spent.get(phase, 0) + total

    async def _run_group(
        self, group: list[tuple[Candidate, list[Task]]], phase: str, report: Callable[[int], None]
    ) -> None:
        """One job for candidates sharing a task list; ``report`` gets its evaluations done so far."""
        tasks = group[0][1]
        spec = {
            "graphs": [{"name": c.name, "graph": c.graph} for c, _ in group],
            "tasks": [t.to_json() for t in tasks],
            "seed": self.seed,
            "batch_size": self.batch_size,
            "taper": True,  # the round's last units are single tasks: the providers finish together
            "prices": prices_to_json(self.prices),
            "suite": self.suite,
        }
        key = "path-search-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:40]
        job = await asyncio.to_thread(self._node().submit_job, "path-eval", spec, key)
        self.jobs.append(job["id"])
        size = len(group) * len(tasks)
        while job["state"] not in TERMINAL:
            job = await asyncio.to_thread(self._wait, job["id"])
            units = job.get("units") or {}
            if units.get("total"):
                report(size * units["done"] // units["total"])
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
        report(size)

    def _wait(self, job_id: str) -> dict:
        """The job when it ends or after WAIT_SECONDS (a long-poll); a node that answers at once
        (one that does not long-poll) is asked again after POLL_SECONDS."""
        started = time.monotonic()
        job = self._node().get_json(f"/api/jobs/{job_id}", params={"wait": WAIT_SECONDS})
        if job["state"] not in TERMINAL and time.monotonic() - started < POLL_SECONDS:
            time.sleep(POLL_SECONDS)
        return job

    def call_counts(self) -> tuple[int, int]:
        """Counted from the records: the calls were made on the providers, not through this client."""
        return self._recorded_calls()

    def _node(self) -> NodeClient:
        if self.node is None:
            raise SearchError("the cluster evaluator needs a node client")
        return self.node
