"""Learned routers and logprob cascades through a real node: the search embeds the search split with the
node's /v1/embeddings, reads token logprobs from its chat API, fits routers and cascades, measures the
simple baselines on the held-out split, and the found router path publishes and serves as path/NAME."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import openai
import pytest

from iollm.paths.clients import open_client
from iollm.paths.pricing import PriceBook
from iollm.paths.search import Search, SearchConfig
from iollm.paths.suites import Suite
from iollm.paths.task import Task
from nodes import Node

MODELS = ["local/smol-a", "local/smol-b"]


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node: Node = node_factory("--no-seed")
    for model in MODELS:
        node.cli_json("push", str(smollm2_gguf), model)
    return node


def suite() -> Suite:
    tasks = [Task(f"add/{i}", f"What is {i} plus {i + 1}?", str(2 * i + 1), "numeric") for i in range(1, 9)]
    return Suite("tiny-add", "tiny additions", tasks, "memory")


def test_learned_paths_and_baselines_through_a_node(served: Node, tmp_path: Path) -> None:
    # tokens only: with compute seconds priced, a loaded machine could make the dearer model's calls look
    # cheaper (the two are the same weights), and the cascade would then have no cheap first stage
    prices = PriceBook.from_parameters({MODELS[0]: 100_000_000, MODELS[1]: 300_000_000}, compute_per_second=0)
    config = SearchConfig(
        MODELS, suite(), None, 2, 0, 0.5, None, 4, templates=["single", "cascade"], styles=["direct"]
    )

    async def main() -> tuple[dict, Search]:
        client, inner = open_client(f"{served.url}/v1", served.token, tmp_path / "calls.sqlite", 2)
        try:
            search = Search(config, client, prices)
            return await search.run(), search
        finally:
            await inner.close()

    result, search = asyncio.run(main())
    names = [e["name"] for e in result["learned"]]
    assert any(n.startswith("route:knn") for n in names) and any(n.startswith("route:mf") for n in names)
    assert any(n.startswith("cascade-logprob") for n in names), result["notes"]  # the node sent logprobs
    for entry in result["learned"]:
        assert entry["heldout"]["n"] == 4 and entry["search"]["cross_validated"]
    simple = result["simple_baselines"]
    assert simple["baselines"]["oracle_router"]["score"] >= simple["baselines"]["best_single"]["score"]
    assert simple["verdict"]
    # the router's held-out runs embedded each task through the node (a priced call on the route node)
    router = next(c for c in search.learned if c.name.startswith("route:knn"))
    held = search.evaluator.records(router, search.split.heldout)
    assert all(r["calls"] == 2 for r in held)  # one embedding, one answer

    # the trained state travels in the graph: publish it and call it as a model
    graph = tmp_path / "router.json"
    graph.write_text(json.dumps(router.graph), encoding="utf-8")
    served.cli_json("path", "publish", str(graph), "tiny-router")
    chat = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token)
    reply = chat.chat.completions.create(
        model="path/tiny-router", messages=[{"role": "user", "content": "What is 2 plus 3?"}]
    )
    assert reply.choices[0].message.content is not None
