"""Learned routers (kNN, matrix factorisation) on synthetic embeddings and correctness matrices: model
skill depends on the task's cluster, so a router that learns beats random routing and the best single
model; and a route node with a trained state runs in a workflow, embedding through the client."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from iollm.paths.clients import RecordedClient
from iollm.paths.executor import Executor
from iollm.paths.graph import GraphError, parse_graph
from iollm.paths.learned import Table, learn_routers, route_graph
from iollm.paths.routers import knn, mf, routers
from iollm.paths.space import build_space
from iollm.paths.task import Task

MODELS = ["m/a", "m/b", "m/c"]


def clusters(n: int, seed: int = 0, dims: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings in 3 clusters (plus a large shared component, as pooled LLM embeddings have); model i
    is right on 90 % of cluster i and 20 % elsewhere."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, dims)) * 2
    label = rng.integers(0, 3, n)
    x = centres[label] + rng.standard_normal((n, dims)) * 0.8 + 10.0
    skill = np.where(np.arange(3)[None, :] == label[:, None], 0.9, 0.2)
    y = (rng.random((n, 3)) < skill).astype(float)
    return x, y, label


@pytest.mark.parametrize("module", [knn, mf])
def test_router_beats_random_and_best_single(module) -> None:
    x, y, _ = clusters(240)
    train, test = slice(0, 120), slice(120, 240)
    state = module.train(x[train], y[train], MODELS, [1.0, 1.0, 1.0], seed=1)
    picks = [MODELS.index(module.route(state, v)) for v in x[test]]
    routed = y[test][np.arange(120), picks].mean()
    best_single = y[test].mean(axis=0).max()
    random_routing = y[test].mean()
    assert routed >= best_single + 0.25
    assert routed >= random_routing + 0.3


def test_cost_weight_moves_traffic_to_the_cheap_model() -> None:
    x, y, _ = clusters(150, seed=2)
    costs = [1.0, 5.0, 25.0]
    free = knn.train(x, y, MODELS, costs, cost_weight=0.0)
    thrifty = knn.train(x, y, MODELS, costs, cost_weight=5.0)
    cheap_free = sum(knn.route(free, v) == MODELS[0] for v in x)
    cheap_thrifty = sum(knn.route(thrifty, v) == MODELS[0] for v in x)
    assert cheap_thrifty > cheap_free and cheap_thrifty >= 0.9 * len(x)


def test_state_is_json_and_checked() -> None:
    import json

    x, y, _ = clusters(30)
    for module in (knn, mf):
        state = json.loads(json.dumps(module.train(x, y, MODELS, [1, 2, 3])))
        assert module.route(state, x[0]) in MODELS
    assert {"knn", "mf", "regex"} <= set(routers())
    bad = {
        "nodes": [
            {"id": "r", "kind": "route", "router": "knn", "embed_model": "m/a", "state": {"models": []}},
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "r", "to": "out", "branch": "x"}],
    }
    with pytest.raises(GraphError, match="router state lacks"):
        parse_graph(bad)


def _singles() -> list:
    space = build_space(MODELS, "exact")
    return [c for c in space if c.template == "single" and c.params["style"] == "direct"]


def test_cross_validated_routers_from_a_search_table() -> None:
    """The search's material: per task and model, score and cost; the routers are cross-validated."""
    x, y, _ = clusters(90, seed=3)
    singles = _singles()
    tasks = [Task(f"t{i}", f"question {i}", "x", "exact") for i in range(90)]
    records = {
        (c.name, t.id): {"score": y[i, j], "cost": 10.0 * (j + 1), "latency_s": 0.1}
        for i, t in enumerate(tasks)
        for j, c in enumerate(singles)
    }
    table = Table.from_records(singles, tasks, lambda c, t: records[(c.name, t.id)])
    found = learn_routers(table, x, np.zeros(90), "m/a", "direct", seed=0)
    assert {c.params["router"] for c, _ in found} == {"knn", "mf"}
    best_single = y.mean(axis=0).max()
    top = max(f["quality"] for _, f in found)
    assert top >= best_single + 0.2
    for candidate, _ in found:
        parse_graph(candidate.graph)


def test_route_node_runs_through_the_client() -> None:
    """A trained route node embeds the input through the client, takes one branch, pays for the vector."""
    x, y, label = clusters(60, seed=4)
    texts = [f"task {i}" for i in range(60)]
    vector_of = dict(zip(texts, x, strict=True))
    state = knn.train(x, y, MODELS, [1, 1, 1])
    graph = parse_graph(route_graph("r", "knn", state, "m/a", _singles()))
    client = RecordedClient(lambda model, prompt, params: model, embeddings=lambda m, t: vector_of[t])
    executor = Executor(client)
    hits = 0
    for i in range(60):
        result = asyncio.run(executor.run(graph, texts[i]))
        assert result.nodes["route"].detail["branch"] == result.answer
        assert len(result.nodes["route"].calls) == 1  # the embedding, priced as a call
        hits += result.answer == MODELS[label[i]]
    assert hits >= 50
