"""A workflow run from the editor: validated against the models this node serves, then executed with
live events (``node_started``, ``token``, ``node_finished``, then ``run_finished`` with totals).

Run-one-node and run-up-to-a-node pass the outputs the editor already has for upstream nodes as
``cached``: the executor reuses them without a call, so they are neither re-run nor paid for again."""

from __future__ import annotations

import time
from typing import Any

from ..errors import ProtocolError
from ..hub import Hub, Identity
from ..paths.executor import Executor, ancestors
from ..paths.graph import Graph, GraphError, parse_graph
from ..runtime import Runtime
from .live_client import LiveClient
from .prices import price_book
from .sse import Emit


def served_models(hub: Hub, caller: Identity, extra: list[str] | None = None) -> set[str]:
    """Models a workflow on this node may call: hub models with a commit, and published paths."""
    found = {r.repo_id for r in hub.list_repos(caller, "model") if hub.refs(r)["branches"]}
    return found | set(extra or [])


def check_run_request(hub: Hub, caller: Identity, body: dict[str, Any]) -> tuple[Graph, dict[str, str]]:
    """The graph and the cached outputs of a run request, or a clear error before anything starts."""
    if not isinstance(body.get("graph"), dict):
        raise ProtocolError('send {"graph": {...workflow...}, "input": TEXT}')
    if not isinstance(body.get("input", ""), str):
        raise ProtocolError("input must be a string")
    try:
        graph = parse_graph(body["graph"], known_models=served_models(hub, caller))
    except GraphError as exc:
        raise ProtocolError(f"the workflow cannot run: {exc}", param=exc.node) from exc
    cached = body.get("cached") or {}
    if not isinstance(cached, dict) or not all(isinstance(v, str) for v in cached.values()):
        raise ProtocolError('cached must map node ids to their earlier outputs: {"plan": "..."}')
    ids = {n.id for n in graph.nodes}
    unknown = sorted(set(cached) - ids)
    if unknown:
        raise ProtocolError(f"cached output for {unknown[0]!r}, which is not a node of this workflow")
    until = body.get("until")
    if until is not None and until not in ids:
        raise ProtocolError(f"until names {until!r}, which is not a node of this workflow")
    if body.get("only"):
        # Run one node: every node upstream of it must already have an output to reuse.
        target = str(body["only"])
        if target not in ids:
            raise ProtocolError(f"only names {target!r}, which is not a node of this workflow")
        missing = sorted(ancestors(graph, target) - {target} - set(cached))
        if missing:
            raise ProtocolError(
                f"node {target!r} needs the outputs of {', '.join(missing)} first: run up to {target!r} instead"
            )
        cached = {k: v for k, v in cached.items() if k != target}
    return graph, {str(k): v for k, v in cached.items()}


def run_work(runtime: Runtime, hub: Hub, caller: Identity, body: dict[str, Any]):
    """The streaming job for ``sse.stream``; raises on bad input before the stream opens."""
    graph, cached = check_run_request(hub, caller, body)
    until = body.get("only") or body.get("until")
    runtime.caller_name(caller)  # an anonymous caller on a node without anonymous inference fails here
    seed = int(body.get("seed") or 0)

    async def work(emit: Emit) -> dict[str, Any]:
        prices = price_book(hub, caller, graph.models())
        await emit(
            {
                "type": "run_started",
                "order": graph.order(),
                "cached": sorted(cached),
                "until": until,
                "graph_hash": graph.canonical_hash(),
            }
        )
        started = time.perf_counter()
        executor = Executor(LiveClient(runtime, caller, emit), prices, seed=seed)
        result = await executor.run(graph, str(body.get("input", "")), cached, until, emit)
        totals = result.as_dict()
        totals["wall_s"] = round(time.perf_counter() - started, 4)
        return {"type": "run_finished", "result": totals}

    return work
