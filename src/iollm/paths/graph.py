"""Workflow graphs (schema ``iollm.workflow/1``): a DAG of model calls in roles, votes, cascades, routes,
sandboxed Python, and one output. The same JSON is drawn by the editor, produced by the search, and run
by ``iollm path run``.

Prompts are templates: ``{{input}}`` is the task, ``{{node_id}}`` is an upstream node's output. Every
variable must name a node connected to this one by an edge, so a graph is checked before any call.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .routers import router_for

SCHEMA = "iollm.workflow/1"
NODE_KINDS = ("model", "vote", "cascade", "route", "python", "output")
CASCADE_CHECKS = ("agreement", "format", "python", "logprob")
ROLES = ("planner", "solver", "critic", "refiner", "verifier", "aggregator")
VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
RESERVED_VARIABLES = frozenset({"input", "feedback"})


class GraphError(ValueError):
    """A graph that cannot run; ``node`` names the culprit when there is one (the editor marks it)."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    @property
    def models(self) -> list[str]:
        if self.kind in ("model", "vote"):
            return [self.config["model"]] if self.config.get("model") else []
        if self.kind == "cascade":
            return list(self.config.get("models") or [])
        return []

    def templates(self) -> list[str]:
        stages = self.config.get("stages") if self.kind == "cascade" else None
        staged = [s.get("prompt") for s in stages or () if isinstance(s, dict)]
        return [
            t
            for t in (self.config.get("prompt"), self.config.get("system"), self.config.get("code"), *staged)
            if t
        ]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    branch: str | None = None  # for edges leaving a route node: the branch name that enables this edge


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise GraphError(f"no node {node_id!r}")

    def upstream(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.target == node_id]

    def downstream(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.source == node_id]

    @property
    def output(self) -> Node:
        return next(n for n in self.nodes if n.kind == "output")

    def models(self) -> list[str]:
        return sorted({m for n in self.nodes for m in n.models})

    def order(self) -> list[list[str]]:
        """Topological levels: nodes of one level do not depend on each other and may run in parallel."""
        indegree = {n.id: 0 for n in self.nodes}
        for edge in self.edges:
            indegree[edge.target] += 1
        level = sorted(n for n, d in indegree.items() if d == 0)
        levels = []
        seen = 0
        while level:
            levels.append(level)
            seen += len(level)
            nxt = []
            for node_id in level:
                for edge in self.downstream(node_id):
                    indegree[edge.target] -= 1
                    if indegree[edge.target] == 0:
                        nxt.append(edge.target)
            level = sorted(set(nxt))
        if seen != len(self.nodes):
            left = {n for n, d in indegree.items() if d > 0}
            while True:  # nodes merely downstream of a cycle are left over too: name only the cycle's own
                tail = {n for n in left if not any(e.target in left for e in self.downstream(n))}
                if not tail:
                    break
                left -= tail
            cycle = sorted(left)
            raise GraphError(f"the graph has a cycle through {', '.join(cycle)}", node=cycle[0])
        return levels

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "description": self.description,
            "nodes": [{"id": n.id, "kind": n.kind, **n.config} for n in self.nodes],
            "edges": [
                {"from": e.source, "to": e.target, **({"branch": e.branch} if e.branch else {})}
                for e in self.edges
            ],
        }

    def canonical_hash(self) -> str:
        """Identity of what the graph computes: name, description and layout (editor positions) excluded,
        nodes and edges sorted. Two submissions with the same hash are the same path."""
        body = self.to_json()
        nodes = sorted(
            ({k: v for k, v in n.items() if k not in ("position", "label", "note")} for n in body["nodes"]),
            key=lambda n: n["id"],
        )
        edges = sorted(body["edges"], key=lambda e: (e["from"], e["to"], e.get("branch") or ""))
        canonical = json.dumps(
            {"schema": SCHEMA, "nodes": nodes, "edges": edges}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def variables(template: str) -> set[str]:
    return {m.group(1) for m in VARIABLE.finditer(template)}


def render(template: str, values: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: values.get(m.group(1), ""), template)


def _check_stages(node: Node, models: int) -> None:
    """A cascade's optional ``stages``: one object per model, each with its own ``prompt``, ``params`` and
    ``program`` (the stage's answer is what its code prints, run in the sandbox)."""
    stages = node.get("stages")
    if stages is None:
        return
    fix = "give one object per model with prompt, params and program (true or false)"
    if not isinstance(stages, list) or len(stages) != models or not all(isinstance(s, dict) for s in stages):
        raise GraphError(
            f"cascade node {node.id!r}: stages must be a list of {models} objects; {fix}", node.id
        )
    for stage in stages:
        unknown = set(stage) - {"prompt", "params", "program"}
        if unknown:
            raise GraphError(
                f"cascade node {node.id!r}: unknown stage field(s) {sorted(unknown)}; {fix}", node.id
            )
        if not isinstance(stage.get("prompt", ""), str) or not isinstance(stage.get("params", {}), dict):
            raise GraphError(
                f"cascade node {node.id!r}: a stage's prompt is text and its params an object", node.id
            )
        if not isinstance(stage.get("program", False), bool):
            raise GraphError(f"cascade node {node.id!r}: a stage's program is true or false", node.id)
    if not node.get("prompt") and not all(s.get("prompt") for s in stages):
        raise GraphError(f"cascade node {node.id!r}: every stage needs a prompt (or the node one)", node.id)


def _check_node(node: Node) -> None:
    if node.kind == "model":
        if not node.get("model"):
            raise GraphError(f"model node {node.id!r} has no model", node.id)
        role = node.get("role")
        if role is not None and role not in ROLES:
            raise GraphError(f"node {node.id!r}: unknown role {role!r} (roles: {', '.join(ROLES)})", node.id)
        if not node.get("prompt") and not role:
            raise GraphError(f"model node {node.id!r} needs a prompt or a role", node.id)
    elif node.kind == "vote":
        if not node.get("model"):
            raise GraphError(f"vote node {node.id!r} has no model", node.id)
        if not 2 <= int(node.get("k", 0)) <= 64:
            raise GraphError(f"vote node {node.id!r}: k must be between 2 and 64", node.id)
        if node.get("mode", "majority") not in ("majority", "normalized"):
            raise GraphError(f"vote node {node.id!r}: mode must be majority or normalized", node.id)
    elif node.kind == "cascade":
        models = node.get("models") or []
        if len(models) < 2:
            raise GraphError(f"cascade node {node.id!r} needs at least two models, cheapest first", node.id)
        if node.get("check", "agreement") not in CASCADE_CHECKS:
            raise GraphError(
                f"cascade node {node.id!r}: check must be one of {', '.join(CASCADE_CHECKS)}", node.id
            )
        if node.get("check") == "logprob":
            value = node.get("threshold", -1.0)
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, int | float) and v <= 0 for v in values) or (
                isinstance(value, list) and len(value) != len(models) - 1
            ):
                raise GraphError(
                    f"cascade node {node.id!r}: a logprob threshold is a log-probability (<= 0), or one per "
                    "escalating stage",
                    node.id,
                )
            if node.get("metric", "mean") not in ("mean", "min"):
                raise GraphError(f"cascade node {node.id!r}: metric must be mean or min", node.id)
        _check_stages(node, len(models))
    elif node.kind == "route":
        try:
            router_for(node).check(node)
        except ValueError as exc:
            raise GraphError(str(exc), node.id) from exc
    elif node.kind == "python":
        if not node.get("code"):
            raise GraphError(f"python node {node.id!r} has no code", node.id)
    elif node.kind != "output":
        raise GraphError(
            f"unknown node kind {node.kind!r} for {node.id!r} (kinds: {', '.join(NODE_KINDS)})", node.id
        )


def parse_graph(data: dict[str, Any] | str, known_models: set[str] | None = None) -> Graph:
    """Validate a workflow: schema version, ids, node kinds, a DAG with one output, and template variables
    that name connected upstream nodes. ``known_models`` (when given) must contain every model used."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise GraphError(f"workflow is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GraphError("a workflow is a JSON object with nodes and edges")
    if data.get("schema", SCHEMA) != SCHEMA:
        raise GraphError(f"unsupported workflow schema {data.get('schema')!r}; this version reads {SCHEMA}")
    nodes = []
    for raw in data.get("nodes") or []:
        if not isinstance(raw, dict) or not _ID.match(str(raw.get("id", ""))):
            raise GraphError(f"every node needs an id of letters, digits, '_' or '-': {raw!r}")
        config = {k: v for k, v in raw.items() if k not in ("id", "kind")}
        node = Node(str(raw["id"]), str(raw.get("kind", "")), config)
        if node.id in RESERVED_VARIABLES:
            raise GraphError(f"{node.id!r} is a reserved name", node.id)
        _check_node(node)
        nodes.append(node)
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise GraphError("node ids must be unique")
    outputs = [n for n in nodes if n.kind == "output"]
    if len(outputs) != 1:
        raise GraphError("a workflow needs exactly one output node")
    edges = []
    for raw in data.get("edges") or []:
        source, target = raw.get("from") or raw.get("source"), raw.get("to") or raw.get("target")
        if source not in ids or target not in ids:
            raise GraphError(
                f"edge {source!r} -> {target!r} names a node that does not exist", target or source
            )
        edges.append(Edge(source, target, raw.get("branch")))
    graph = Graph(
        str(data.get("name") or "workflow"),
        tuple(nodes),
        tuple(edges),
        str(data.get("description") or ""),
        raw=data,
    )
    graph.order()  # raises on cycles
    for node in nodes:
        sources = {e.source for e in graph.upstream(node.id)}
        for template in node.templates():
            for name in variables(template):
                base = name.split(".")[0]
                if base not in RESERVED_VARIABLES and base not in sources:
                    raise GraphError(
                        f"node {node.id!r} uses {{{{{name}}}}} but has no edge from a node {base!r}", node.id
                    )
        if node.kind == "output" and len(sources) == 0:
            raise GraphError(
                "the output node has no input: connect the node whose answer is the result", node.id
            )
        if node.kind == "route":
            for edge in graph.downstream(node.id):
                if edge.branch is None:
                    raise GraphError(f"edges leaving route {node.id!r} need a branch name", node.id)
    if known_models is not None:
        for node in nodes:
            for model in node.models:
                if model not in known_models:
                    raise GraphError(
                        f"node {node.id!r} uses model {model!r}, which this node does not serve", node.id
                    )
    return graph


def problems(data: dict[str, Any], known_models: set[str] | None = None) -> list[GraphError]:
    """Every reason ``data`` cannot run, not just the first, so the editor can mark all culprits at once
    (``parse_graph`` stops at the first). An empty list means ``parse_graph`` accepts the graph."""
    found: list[GraphError] = []
    if not isinstance(data, dict):
        return [GraphError("a workflow is a JSON object with nodes and edges")]
    if data.get("schema", SCHEMA) != SCHEMA:
        return [
            GraphError(f"unsupported workflow schema {data.get('schema')!r}; this version reads {SCHEMA}")
        ]
    nodes: list[Node] = []
    for raw in data.get("nodes") or []:
        if not isinstance(raw, dict) or not _ID.match(str(raw.get("id", ""))):
            found.append(GraphError(f"every node needs an id of letters, digits, '_' or '-': {raw!r}"))
            continue
        node = Node(
            str(raw["id"]),
            str(raw.get("kind", "")),
            {k: v for k, v in raw.items() if k not in ("id", "kind")},
        )
        if node.id in RESERVED_VARIABLES:
            found.append(GraphError(f"{node.id!r} is a reserved name", node.id))
        try:
            _check_node(node)
        except GraphError as exc:
            found.append(exc)
        except (TypeError, ValueError) as exc:
            found.append(GraphError(f"node {node.id!r}: {exc}", node.id))
        nodes.append(node)
    ids = [n.id for n in nodes]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        found.append(GraphError(f"node id {dup!r} is used twice; ids must be unique", dup))
    outputs = [n for n in nodes if n.kind == "output"]
    if len(outputs) != 1:
        found.append(GraphError(f"a workflow needs exactly one output node (it has {len(outputs)})"))
    edges = []
    for raw in data.get("edges") or []:
        source, target = raw.get("from") or raw.get("source"), raw.get("to") or raw.get("target")
        if source not in ids or target not in ids:
            found.append(GraphError(f"edge {source!r} -> {target!r} names a node that does not exist"))
            continue
        edges.append(Edge(source, target, raw.get("branch")))
    unique = tuple({n.id: n for n in nodes}.values())
    graph = Graph(str(data.get("name") or "workflow"), unique, tuple(edges))
    try:
        graph.order()
    except GraphError as exc:
        found.extend(GraphError(str(exc), node) for node in _cycle_members(exc))
    for node in unique:
        sources = {e.source for e in graph.upstream(node.id)}
        for template in node.templates():
            for name in sorted(variables(str(template))):
                base = name.split(".")[0]
                if base not in RESERVED_VARIABLES and base not in sources:
                    found.append(
                        GraphError(
                            f"node {node.id!r} uses {{{{{name}}}}} but has no edge from a node {base!r}",
                            node.id,
                        )
                    )
        if node.kind == "output" and not sources:
            found.append(
                GraphError(
                    "the output node has no input: connect the node whose answer is the result", node.id
                )
            )
        if node.kind == "route" and any(e.branch is None for e in graph.downstream(node.id)):
            found.append(GraphError(f"edges leaving route {node.id!r} need a branch name", node.id))
        if known_models is not None:
            found.extend(
                GraphError(f"node {node.id!r} uses model {model!r}, which this node does not serve", node.id)
                for model in node.models
                if model not in known_models
            )
    return found


def _cycle_members(exc: GraphError) -> list[str | None]:
    """The node ids named by a cycle error (so each node on the cycle gets marked)."""
    text = str(exc)
    marker = "cycle through "
    return [n.strip() for n in text.split(marker, 1)[1].split(",")] if marker in text else [exc.node]


def load_graph(path: str) -> Graph:
    with open(path, encoding="utf-8") as handle:
        return parse_graph(handle.read())
