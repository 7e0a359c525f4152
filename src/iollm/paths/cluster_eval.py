"""The ``path-eval`` job kind: evaluate workflow graphs on task batches on the providers' own machines.

The node pins every model to a commit and ships the tasks in the spec, so a unit is self-contained:
a provider pulls the weights (verified), runs the graph with llama.cpp locally and returns per-task
scores. Audits compare only what must reproduce exactly with seeded sampling (answers, scores,
token counts), never timings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from ..compute import register_kind
from ..compute.local_models import chat_once
from ..errors import NotFound, ProtocolError
from .call_plan import call_signatures
from .catalog import load_suite
from .clients import CallResult
from .evaluation import evaluate_unit_async
from .graph import GraphError, parse_graph
from .pricing import prices_from_json
from .suites import SuiteError, task_from_json

DEFAULT_BATCH = 8
TAPER_UNITS = 4  # with "taper": the units started last are split into one unit per task


class LocalModelClient:
    """A ModelClient whose calls run on this worker's own engines."""

    def __init__(self, ctx: Any, models: dict[str, dict[str, str]]) -> None:
        self.ctx = ctx
        self.models = models

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        info = self.models.get(model)
        if info is None:
            raise KeyError(f"model {model} was not pinned by the node for this job")
        text, prompt, completion, seconds = await asyncio.to_thread(
            chat_once, self.ctx, info["repo"], info["commit"], messages, params
        )
        return CallResult(model, text, prompt, completion, seconds)


def _tasks_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    if spec.get("tasks"):
        return list(spec["tasks"])
    try:
        suite = load_suite(spec["suite"])
    except (SuiteError, KeyError, FileNotFoundError) as exc:
        raise ProtocolError(f"path-eval: cannot load suite {spec.get('suite')!r}: {exc}") from exc
    wanted = spec.get("task_ids")
    if wanted:
        by_id = {t.id: t for t in suite.tasks}
        missing = [t for t in wanted if t not in by_id]
        if missing:
            raise ProtocolError(f"path-eval: suite {suite.name} has no task {missing[0]!r}")
        chosen = [by_id[t] for t in wanted]
    else:
        split = suite.split(seed=int(spec.get("split_seed", 0)), max_tasks=spec.get("max_tasks"))
        chosen = split.heldout if spec.get("split") == "heldout" else split.search
    return [t.to_json() for t in chosen]


class PathEval:
    name = "path-eval"
    checkpointed = False

    def validate(self, spec: dict[str, Any], services: Any, caller: Any) -> dict[str, Any]:
        graphs = spec.get("graphs") or (
            [{"name": "graph", "graph": spec["graph"]}] if spec.get("graph") else []
        )
        if not graphs:
            raise ProtocolError("path-eval needs 'graphs': [{name, graph}] (or a single 'graph')")
        models: set[str] = set()
        for item in graphs:
            try:
                models.update(parse_graph(item["graph"]).models())
            except (GraphError, KeyError, TypeError) as exc:
                raise ProtocolError(f"path-eval: bad graph {item.get('name')!r}: {exc}") from exc
        pinned = {}
        for model in sorted(models):
            repo_id, _, revision = model.partition("@")
            try:
                repo = services.hub.get_repo(caller, "model", repo_id)
                pinned[model] = {"repo": repo_id, "commit": services.hub.resolve(repo, revision or None)}
            except NotFound as exc:
                raise ProtocolError(f"path-eval: model {model!r} does not exist on this node") from exc
        tasks = _tasks_of(spec)
        if not tasks:
            raise ProtocolError("path-eval: no tasks to evaluate")
        return {
            "graphs": graphs,
            "tasks": tasks,
            "models": pinned,
            "seed": int(spec.get("seed", 0)),
            "batch_size": max(1, int(spec.get("batch_size", DEFAULT_BATCH))),
            "taper": bool(spec.get("taper", False)),
            "prices": spec.get("prices") or {},
            "suite": spec.get("suite", "inline"),
        }

    def plan(self, job_id: str, spec: dict[str, Any], services: Any) -> list[tuple[str, dict[str, Any]]]:
        size = spec["batch_size"]
        units = []
        for g, item in enumerate(spec["graphs"]):
            for b in range(0, len(spec["tasks"]), size):
                units.append(
                    (
                        f"g{g}-b{b // size}",
                        {
                            "graph_index": g,
                            "graph": item["graph"],
                            "tasks": spec["tasks"][b : b + size],
                            "models": spec["models"],
                            "seed": spec["seed"],
                            "prices": spec["prices"],
                        },
                    )
                )
        return self._taper(units) if spec.get("taper") else units

    def _taper(self, units: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """Split the TAPER_UNITS units the scheduler starts last (the cheapest; the latest of equals)
        into one unit per task: the providers then finish a job within about one task of each other,
        instead of one of them running a whole batch alone at the end. Each task is in one unit."""
        order = sorted(range(len(units)), key=lambda i: (-self.cost(units[i][1]), i))
        last = set(order[-TAPER_UNITS:])
        out: list[tuple[str, dict[str, Any]]] = []
        for i, (key, payload) in enumerate(units):
            if i in last and len(payload["tasks"]) > 1:
                out += [(f"{key}-t{j}", {**payload, "tasks": [t]}) for j, t in enumerate(payload["tasks"])]
            else:
                out.append((key, payload))
        return out

    def resources(self, payload: dict[str, Any]) -> dict[str, int]:
        return {"CPU": 1}

    def cost(self, payload: dict[str, Any]) -> float:
        """Expected work of a unit: its tasks times the model calls its graph makes on one (an upper
        bound), so a unit of a five-sample vote is started before a unit of single calls."""
        try:
            calls = len(call_signatures(payload["graph"], int(payload.get("seed", 0))))
        except (GraphError, KeyError, TypeError, ValueError):
            calls = 1
        return float(len(payload["tasks"]) * max(1, calls))

    def run(self, payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
        tasks = [task_from_json(t) for t in payload["tasks"]]
        client = LocalModelClient(ctx, payload["models"])
        ctx.log(f"evaluating graph {payload['graph_index']} on {len(tasks)} task(s)")
        result = asyncio.run(
            evaluate_unit_async(
                payload["graph"], tasks, client, prices_from_json(payload["prices"]), None, payload["seed"], 1
            )
        )
        return {"graph_index": payload["graph_index"], **result}

    def audit_view(self, result: dict[str, Any]) -> str:
        """What an honest re-execution must reproduce exactly."""
        view = [
            (t["id"], t["score"], t["answer"], t["prompt_tokens"], t["completion_tokens"])
            for t in result.get("tasks", [])
        ]
        return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()

    def finish(self, job: dict[str, Any], results: dict[str, Any], services: Any) -> dict[str, Any]:
        per_graph: dict[int, list[dict[str, Any]]] = {}
        for result in results.values():
            per_graph.setdefault(result["graph_index"], []).extend(result["tasks"])
        out = []
        for g, item in enumerate(job["spec"]["graphs"]):
            records = per_graph.get(g, [])
            n = max(1, len(records))
            out.append(
                {
                    "name": item.get("name", f"graph{g}"),
                    "tasks": len(records),
                    "score": sum(r["score"] for r in records) / n,
                    "cost_per_task": sum(r["cost"] for r in records) / n,
                    "records": records,
                }
            )
        return {"graphs": out}


register_kind(PathEval())
