"""Evaluate the drawn workflow on a suite from the editor: every task is run and checked exactly as the
path search does (``paths.evaluation.evaluate_task``), with one ``task`` event per finished task and the
mean score, cost and latency at the end."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import ProtocolError
from ..hub import Hub, Identity
from ..paths.clients import SerialPerModel
from ..paths.evaluation import evaluate_task
from ..paths.executor import Executor
from ..paths.graph import GraphError, parse_graph
from ..paths.sandbox import Sandbox
from ..paths.serving import RuntimeClient
from ..runtime import Runtime
from .prices import price_book
from .runs import served_models
from .sse import Emit
from .suites import first_tasks, suite_from_request


def evaluate_work(runtime: Runtime, hub: Hub, caller: Identity, body: dict[str, Any]):
    if not isinstance(body.get("graph"), dict):
        raise ProtocolError('send {"graph": {...}, "suite": NAME} or {"graph": {...}, "tasks": [...]}')
    try:
        graph = parse_graph(body["graph"], known_models=served_models(hub, caller))
    except GraphError as exc:
        raise ProtocolError(f"the workflow cannot run: {exc}", param=exc.node) from exc
    suite = first_tasks(suite_from_request(body), body)
    runtime.caller_name(caller)

    async def work(emit: Emit) -> dict[str, Any]:
        sandbox = Sandbox(timeout_s=10)
        executor = Executor(
            SerialPerModel(RuntimeClient(runtime, caller)), price_book(hub, caller, graph.models()), sandbox
        )
        await emit({"type": "evaluation_started", "suite": suite.name, "tasks": len(suite.tasks)})
        gate = asyncio.Semaphore(2)
        records: list[dict[str, Any]] = []

        async def one(task: Any) -> None:
            async with gate:
                record = await evaluate_task(executor, graph, task, sandbox)
            records.append(record)
            await emit({"type": "task", "done": len(records), "total": len(suite.tasks), "record": record})

        await asyncio.gather(*(one(t) for t in suite.tasks))
        n = max(1, len(records))
        return {
            "type": "evaluation_finished",
            "suite": suite.name,
            "graph_hash": graph.canonical_hash(),
            "tasks": len(records),
            "score": sum(r["score"] for r in records) / n,
            "cost_per_task": sum(r["cost"] for r in records) / n,
            "latency_s": sum(r["latency_s"] for r in records) / n,
            "errors": sum(1 for r in records if r["error"]),
        }

    return work
