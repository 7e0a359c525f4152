"""The path commands through the real CLI against a real node serving SmolLM2 (pushed as local/smol)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from iollm.paths.evaluation import evaluate_unit
from iollm.paths.graph import parse_graph
from nodes import Node

MODEL = "local/smol"


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


def two_nodes(**changes: Any) -> dict[str, Any]:
    graph = {
        "schema": "iollm.workflow/1",
        "name": "plan-solve",
        "nodes": [
            {"id": "plan", "kind": "model", "model": MODEL, "role": "planner", "params": {"max_tokens": 16}},
            {
                "id": "solve",
                "kind": "model",
                "model": MODEL,
                "prompt": "{{input}}\nPlan: {{plan}}\nAnswer:",
                "params": {"max_tokens": 12},
            },
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "plan", "to": "solve"}, {"from": "solve", "to": "out"}],
    }
    graph.update(changes)
    return graph


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def tiny_suite(tmp_path: Path) -> str:
    pairs = [(2, 3), (4, 5), (7, 1), (6, 2), (3, 3), (8, 1), (5, 4), (1, 6)]
    lines = [
        json.dumps(
            {"id": f"tiny/{i}", "input": f"What is {a} plus {b}?", "target": str(a + b), "checker": "numeric"}
        )
        for i, (a, b) in enumerate(pairs)
    ]
    return write(tmp_path, "tiny.jsonl", "\n".join(lines) + "\n")


def test_path_run_prints_answer_with_per_node_tokens(served: Node, tmp_path: Path) -> None:
    graph = write(tmp_path, "graph.json", two_nodes())
    data = served.cli_json("path", "run", graph, "--input", "What is 2 plus 3?")
    assert data["answer"].strip()
    assert data["graph_hash"] == parse_graph(two_nodes()).canonical_hash()
    nodes = {n["id"]: n for n in data["nodes"]}
    for node_id in ("plan", "solve"):
        assert nodes[node_id]["status"] == "ok" and nodes[node_id]["calls"] == 1
        assert nodes[node_id]["prompt_tokens"] > 0 and 0 < nodes[node_id]["completion_tokens"] <= 16
        assert nodes[node_id]["cost"] > 0
    assert data["cost"] == sum(n["cost"] for n in data["nodes"])
    assert data["latency_s"] >= nodes["solve"]["seconds"]
    human = served.cli("path", "run", graph, "--input", "What is 2 plus 3?")
    assert "plan" in human.stdout and "solve" in human.stdout and "answer" in human.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "edges": [
                    {"from": "plan", "to": "solve"},
                    {"from": "solve", "to": "plan"},
                    {"from": "solve", "to": "out"},
                ]
            },
            "cycle through plan, solve",
        ),
        (
            {
                "nodes": [{"id": "plan", "kind": "oracle"}, {"id": "out", "kind": "output"}],
                "edges": [{"from": "plan", "to": "out"}],
            },
            "unknown node kind 'oracle'",
        ),
        (
            {
                "nodes": [
                    {"id": "solve", "kind": "model", "model": "iollm/missing", "prompt": "{{input}}"},
                    {"id": "out", "kind": "output"},
                ],
                "edges": [{"from": "solve", "to": "out"}],
            },
            "uses model 'iollm/missing', which this node does not serve",
        ),
        (
            {
                "nodes": [
                    {"id": "solve", "kind": "model", "model": MODEL, "prompt": "{{input}} {{hint}}"},
                    {"id": "out", "kind": "output"},
                ],
                "edges": [{"from": "solve", "to": "out"}],
            },
            "uses {{hint}} but has no edge from a node 'hint'",
        ),
    ],
)
def test_bad_graph_is_a_clear_cli_error(
    served: Node, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    graph = write(tmp_path, "bad.json", two_nodes(**change))
    result = served.cli("path", "run", graph, "--input", "x", check=False)
    assert result.returncode != 0 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    as_json = served.cli("path", "run", graph, "--input", "x", "--json", check=False)
    assert as_json.returncode != 0 and message in json.loads(as_json.stdout)["error"]["message"]


def test_unreadable_graph_file(served: Node, tmp_path: Path) -> None:
    result = served.cli("path", "run", write(tmp_path, "broken.json", "{nodes"), "--input", "x", check=False)
    assert result.returncode != 0 and "not valid JSON" in result.stderr
    result = served.cli("path", "run", str(tmp_path / "absent.json"), "--input", "x", check=False)
    assert result.returncode != 0 and "absent.json" in result.stderr


def test_suite_list_and_show(served: Node, tmp_path: Path) -> None:
    names = [s["name"] for s in served.cli_json("suite", "list")["suites"]]
    assert "gsm8k" in names and "mmlu" in names and "humaneval" in names
    shown = served.cli_json("suite", "show", tiny_suite(tmp_path), "--split", "heldout", "--limit", "2")
    assert shown["size"] == 8 and shown["split"]["search_size"] + shown["split"]["heldout_size"] == 8
    assert len(shown["tasks"]) == 2 and shown["shown"] == "heldout"
    assert "tiny/" in served.cli("suite", "show", tiny_suite(tmp_path)).stdout


def test_malformed_suite_line_is_named(served: Node, tmp_path: Path) -> None:
    lines = [json.dumps({"input": "What is 1 plus 1?", "target": "2"}), "", "{not json", ""]
    path = write(tmp_path, "broken.jsonl", "\n".join(lines))
    result = served.cli("suite", "show", path, check=False)
    assert result.returncode != 0 and f"{path}:3:" in result.stderr
    result = served.cli("path", "search", "--suite", path, "--models", MODEL, "--no-submit", check=False)
    assert result.returncode != 0 and f"{path}:3:" in result.stderr
    result = served.cli(
        "path", "search", "--suite", tiny_suite(tmp_path), "--models", "iollm/missing", check=False
    )
    assert result.returncode != 0 and "not served" in result.stderr


def test_path_search_reports_and_submits(served: Node, tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path)
    report = tmp_path / "report"
    args = (
        "path",
        "search",
        "--suite",
        suite,
        "--models",
        MODEL,
        "--budget",
        "13",  # one pass over the one-model space's 13 candidates
        "--workers",
        "2",
        "--max-tokens",
        "12",
        "--report-dir",
        str(report),
        "--cache",
        str(tmp_path / "calls.sqlite"),
    )
    result = served.cli_json(*args)
    for key in (
        "best",
        "heldout",
        "evaluations_used",
        "evaluations_exhaustive",
        "calls_made",
        "calls_cached",
        "pareto",
        "baselines",
    ):
        assert key in result, key
    assert result["best"]["name"] and parse_graph(result["best"]["graph"])
    held = result["heldout"]
    assert held["n"] == 4 and held["ci_low"] <= held["score"] <= held["ci_high"] and held["cost_per_task"] > 0
    assert result["evaluations_used"] <= 13 < result["evaluations_exhaustive"] == 13 * 4
    assert result["calls_made"] > 0 and isinstance(result["pareto"], list) and result["pareto"]
    assert result["baselines"]["best_single"]["heldout"]["n"] == 4
    assert result["baselines"]["self_consistency"]["name"].startswith("vote@")  # k set for equal cost
    assert result["baselines"]["cascade"] is None  # one model: nothing to cascade to
    assert result["preview"]["space_size"] == 13 and result["preview"]["projected_calls"]["exhaustive"] > 0
    assert Path(result["report"]["markdown"]).read_text().startswith("# Path search on `tiny`")
    assert Path(result["report"]["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    submission = result["submission"]
    assert submission["record"] and submission["breakthrough"] is None
    assert submission["submission"]["graph_hash"] == result["best"]["hash"]

    again = served.cli_json(*args)  # the same run again: every call from the cache, the same submission
    assert again["calls_made"] == 0 and again["calls_cached"] > 0
    assert again["best"]["name"] == result["best"]["name"] and again["heldout"]["score"] == held["score"]
    assert again["submission"]["submission"]["id"] == submission["submission"]["id"]

    board = served.cli_json("leaderboard", "tiny")
    assert board["holder"]["graph_hash"] == result["best"]["hash"] and board["holder"]["designer"] == "local"
    assert board["fingerprint"] == result["split"]["fingerprint"]["heldout"]
    assert "local" in served.cli("leaderboard", "tiny").stdout
    assert "no submissions" in served.cli("leaderboard", "evals/sort-numeric").stdout


def test_leaderboard_api_needs_a_token_to_submit(served: Node) -> None:
    body = {"graph": two_nodes(), "scores": [1.0, 0.0], "fingerprint": "c" * 64, "cost_per_task": 10}
    reply = httpx.post(f"{served.url}/api/leaderboard/evals/logical-counting/submissions", json=body)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "unauthorized"
    headers = {"Authorization": f"Bearer {served.token}"}
    reply = httpx.post(
        f"{served.url}/api/leaderboard/evals/logical-counting/submissions", json=body, headers=headers
    )
    assert reply.status_code == 200 and reply.json()["record"]
    bad = httpx.post(
        f"{served.url}/api/leaderboard/evals/logical-counting/submissions",
        json={**body, "graph": {"nodes": []}},
        headers=headers,
    )
    assert bad.status_code == 400 and "invalid graph" in bad.json()["error"]["message"]
    board = httpx.get(f"{served.url}/api/leaderboard/evals/logical-counting").json()
    assert board["suite"] == "evals/logical-counting" and board["holder"]["designer"] == "local"
    assert httpx.get(f"{served.url}/api/breakthroughs").json() == {"breakthroughs": []}


def test_unit_of_work_against_the_node(served: Node, tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path)
    graph = two_nodes()
    result = evaluate_unit(
        graph,
        ["tiny/0", "tiny/1"],
        suite,
        f"{served.url}/v1",
        served.token,
        seed=0,
        cache_path=str(tmp_path / "unit.sqlite"),
    )
    assert json.loads(json.dumps(result)) == result
    assert [t["id"] for t in result["tasks"]] == ["tiny/0", "tiny/1"]
    assert all(t["calls"] == 2 and t["error"] is None for t in result["tasks"])
    again = evaluate_unit(
        graph,
        ["tiny/0", "tiny/1"],
        suite,
        f"{served.url}/v1",
        served.token,
        seed=0,
        cache_path=str(tmp_path / "unit.sqlite"),
    )
    assert again["calls_made"] == 0 and [t["score"] for t in again["tasks"]] == [
        t["score"] for t in result["tasks"]
    ]


def test_published_path_is_a_model_over_openai(served: Node, tmp_path: Path) -> None:
    import openai

    graph = write(tmp_path, "graph.json", two_nodes())
    published = served.cli_json("path", "publish", graph, "plan-solve")
    assert published["model"] == "path/plan-solve"
    assert published["graph_hash"] == parse_graph(two_nodes()).canonical_hash()
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token)
    assert "path/plan-solve" in {m.id for m in client.models.list()}
    reply = client.chat.completions.create(
        model="path/plan-solve", messages=[{"role": "user", "content": "What is 2 plus 3?"}]
    )
    assert reply.choices[0].message.content.strip()
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    # A bad graph is refused before anything is published.
    bad = write(tmp_path, "bad.json", two_nodes(edges=[{"from": "plan", "to": "solve"}]))
    result = served.cli("path", "publish", bad, "plan-solve", check=False)
    assert result.returncode != 0 and "invalid graph" in result.stderr
