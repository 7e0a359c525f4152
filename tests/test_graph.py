"""Workflow graphs: validation errors name the culprit, route branches gate their targets, and the
canonical hash identifies what a graph computes (not how it is drawn)."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest

from iollm.paths.clients import RecordedClient
from iollm.paths.executor import Executor
from iollm.paths.graph import SCHEMA, GraphError, parse_graph

M = "local/smol"


def graph(nodes: list[dict[str, Any]], edges: list[tuple[str, ...]], **extra: Any) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "name": "g",
        "nodes": nodes,
        "edges": [{"from": e[0], "to": e[1], **({"branch": e[2]} if len(e) > 2 else {})} for e in edges],
        **extra,
    }


def plan_solve() -> dict[str, Any]:
    return graph(
        [
            {"id": "plan", "kind": "model", "model": M, "role": "planner", "position": {"x": 0, "y": 0}},
            {
                "id": "solve",
                "kind": "model",
                "model": M,
                "prompt": "{{input}}\nPlan: {{plan}}",
                "params": {"max_tokens": 8},
            },
            {"id": "out", "kind": "output", "label": "answer"},
        ],
        [("plan", "solve"), ("solve", "out")],
    )


def test_valid_graph_parses_and_orders() -> None:
    parsed = parse_graph(plan_solve())
    assert parsed.order() == [["plan"], ["solve"], ["out"]]
    assert parsed.models() == [M] and parsed.output.id == "out"
    assert parse_graph(json.dumps(plan_solve())).canonical_hash() == parsed.canonical_hash()


def test_cycle_is_rejected() -> None:
    data = plan_solve()
    data["edges"].append({"from": "solve", "to": "plan"})
    with pytest.raises(GraphError, match=r"cycle through plan, solve$") as info:
        parse_graph(data)
    assert info.value.node == "plan"


def test_unknown_node_kind() -> None:
    data = plan_solve()
    data["nodes"][1]["kind"] = "oracle"
    with pytest.raises(GraphError, match="unknown node kind 'oracle'") as info:
        parse_graph(data)
    assert info.value.node == "solve"


def test_missing_model() -> None:
    with pytest.raises(GraphError, match="uses model 'local/smol', which this node does not serve"):
        parse_graph(plan_solve(), known_models={"iollm/other"})
    data = plan_solve()
    del data["nodes"][0]["model"]
    with pytest.raises(GraphError, match="has no model"):
        parse_graph(data)


def test_template_variable_must_name_a_connected_node() -> None:
    data = plan_solve()
    data["nodes"][1]["prompt"] = "{{input}} {{critique}}"
    with pytest.raises(
        GraphError, match=r"uses \{\{critique\}\} but has no edge from a node 'critique'"
    ) as info:
        parse_graph(data)
    assert info.value.node == "solve"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda g: g.update(schema="iollm.workflow/9"), "unsupported workflow schema"),
        (lambda g: g["nodes"].append({"id": "out2", "kind": "output"}), "exactly one output"),
        (lambda g: g["nodes"][1].update(id="plan"), "unique"),
        (lambda g: g["nodes"][0].update(id="input"), "reserved"),
        (lambda g: g["edges"].append({"from": "plan", "to": "nowhere"}), "does not exist"),
        (lambda g: g["nodes"][0].update(role="oracle"), "unknown role"),
        (lambda g: g.update(edges=[{"from": "plan", "to": "solve"}]), "output node has no input"),
    ],
)
def test_other_invalid_graphs(change: Any, message: str) -> None:
    data = plan_solve()
    change(data)
    with pytest.raises(GraphError, match=message):
        parse_graph(data)


def test_invalid_json_text() -> None:
    with pytest.raises(GraphError, match="not valid JSON"):
        parse_graph("{nodes: ")


def routed() -> dict[str, Any]:
    """A route whose 'long' branch feeds a node that also reads the first answer (a data edge)."""
    return graph(
        [
            {"id": "first", "kind": "model", "model": M, "prompt": "{{input}}"},
            {
                "id": "gate",
                "kind": "route",
                "on": "{{first}}",
                "default": "short",
                "rules": [{"branch": "long", "pattern": r"\w+ \w+ \w+"}],
            },
            {"id": "shorten", "kind": "model", "model": M, "prompt": "Shorten: {{first}}"},
            {"id": "out", "kind": "output"},
        ],
        [
            ("first", "gate"),
            ("gate", "shorten", "long"),
            ("first", "shorten"),
            ("shorten", "out"),
            ("first", "out"),
        ],
    )


def test_route_edges_need_a_branch() -> None:
    data = routed()
    del data["edges"][1]["branch"]
    with pytest.raises(GraphError, match="need a branch name"):
        parse_graph(data)
    data = routed()
    data["nodes"][1]["rules"] = [{"branch": "x", "pattern": "("}]
    with pytest.raises(GraphError, match="bad pattern"):
        parse_graph(data)


@pytest.mark.parametrize(("answer", "taken"), [("one two three four", True), ("four", False)])
def test_route_branch_gates_a_node_with_data_edges(answer: str, taken: bool) -> None:
    client = RecordedClient(lambda model, prompt, params: "short" if prompt.startswith("Shorten") else answer)
    result = asyncio.run(Executor(client).run(parse_graph(routed()), "say something"))
    assert result.nodes["gate"].output == ("long" if taken else "short")
    assert (result.nodes["shorten"].status == "ok") is taken
    assert client.calls == (2 if taken else 1)
    assert result.answer == ("short" if taken else answer)


def test_canonical_hash_ignores_layout_and_order() -> None:
    base = parse_graph(plan_solve()).canonical_hash()
    shuffled = plan_solve()
    shuffled["nodes"].reverse()
    shuffled["edges"].reverse()
    assert parse_graph(shuffled).canonical_hash() == base
    moved = copy.deepcopy(plan_solve())
    moved["nodes"][0]["position"] = {"x": 300, "y": 40}
    moved["nodes"][2]["label"] = "final"
    moved["nodes"][1]["note"] = "drawn by hand"
    moved.update(name="renamed", description="same computation")
    assert parse_graph(moved).canonical_hash() == base
    reordered_keys = {
        "edges": plan_solve()["edges"],
        "nodes": [dict(reversed(list(n.items()))) for n in plan_solve()["nodes"]],
    }
    assert parse_graph(reordered_keys).canonical_hash() == base


def test_canonical_hash_changes_with_the_computation() -> None:
    base = parse_graph(plan_solve()).canonical_hash()
    for change in (
        lambda g: g["nodes"][1]["params"].update(max_tokens=9),
        lambda g: g["nodes"][0].update(model="local/other"),
        lambda g: g["nodes"][1].update(prompt="{{input}}\nFollow: {{plan}}"),
    ):
        data = plan_solve()
        change(data)
        assert parse_graph(data).canonical_hash() != base


def test_a_new_router_is_one_registration_and_unknown_ones_are_named() -> None:
    """A route node names its router; a router registered once (as a module in paths/routers does) is
    checked by the graph and asked by the executor, and an unknown name lists the known ones."""
    from iollm.paths.routers import Router, register_router, routers

    def check(node: Any) -> None:
        if not node.get("threshold"):
            raise ValueError(f"route node {node.id!r} needs a threshold")

    def choose(node: Any, subject: str, values: Any) -> str:
        return "long" if len(subject.split()) >= node.get("threshold") else "short"

    register_router(Router("word-count", "Long answers take the long branch.", check, choose))
    try:
        data = routed()
        data["nodes"][1] = {"id": "gate", "kind": "route", "router": "word-count", "on": "{{first}}"}
        with pytest.raises(GraphError, match="needs a threshold"):
            parse_graph(data)
        data["nodes"][1]["threshold"] = 3
        client = RecordedClient(
            lambda model, prompt, params: "ok" if prompt.startswith("Shorten") else "a b c d"
        )
        result = asyncio.run(Executor(client).run(parse_graph(data), "say something"))
        assert result.nodes["gate"].output == "long" and result.answer == "ok"
        data["nodes"][1]["router"] = "nonesuch"
        with pytest.raises(GraphError, match=r"unknown router 'nonesuch' \(routers: .*regex"):
            parse_graph(data)
    finally:
        from iollm.paths import routers as registry

        registry._ROUTERS.pop("word-count")
    assert "word-count" not in routers() and "regex" in routers()
