"""The ``batch-infer`` job kind with real parts: a node, providers as separate ``iollm provider join``
processes on 127.0.0.1 running SmolLM2 (GGUF) with llama.cpp, outputs stored as a dataset repository."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import test_finetune as pool_helpers  # the provider-pool helper lives there
from nodes import Node

ROWS = [
    {"id": "add", "prompt": "What is 2 + 2? Answer with a number."},
    {"prompt": "Name a colour."},
    {
        "id": 7,
        "messages": [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "What is the opposite of hot?"},
        ],
    },
    {"id": "capital", "prompt": "What is the capital of France?"},
    {"messages": [{"role": "user", "content": "Say hello."}]},
]


@pytest.fixture(scope="module")
def pool(node_factory, smollm2_gguf: Path, tmp_path_factory) -> Iterator[tuple[Node, list]]:
    node = node_factory("--no-seed", "--audit-rate", "0", name="batch")
    node.cli_json("push", str(smollm2_gguf), "local/smol")
    data = tmp_path_factory.mktemp("data") / "questions"
    data.mkdir()
    (data / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    node.cli_json("push", str(data), "local/questions", "--type", "dataset")
    providers = pool_helpers.start_providers(node, tmp_path_factory.mktemp("providers"), ["gamma", "delta"])
    yield node, providers
    pool_helpers.stop_providers(providers)


def spec(**overrides: Any) -> dict[str, Any]:
    return {
        "model": "local/smol",
        "dataset": "local/questions",
        "output": "local/answers",
        "max_tokens": 8,
        "temperature": 0,
        "seed": 1,
        "shard_size": 2,
        **overrides,
    }


@pytest.mark.slow
def test_outputs_dataset_has_one_line_per_row_with_token_counts(pool, tmp_path: Path) -> None:
    node, _ = pool
    reply = pool_helpers.submit(node, "batch-infer", spec(), key="answers")
    assert reply.status_code == 200, reply.text
    job = pool_helpers.wait_job(node, reply.json()["id"])
    assert job["units"] == {"total": 3, "done": 3, "providers": job["units"]["providers"]}
    result = job["result"]
    assert (
        result["output"] == "local/answers"
        and result["rows"] == len(ROWS)
        and result["file"] == "outputs.jsonl"
    )

    folder = pool_helpers.pull_repo(node, "dataset", "local/answers", "main", tmp_path / "answers")
    lines = [json.loads(line) for line in (folder / "outputs.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["add", 1, 7, "capital", 4]  # the row's id, else its position
    assert [x["index"] for x in lines] == list(range(len(ROWS)))
    for line in lines:
        assert set(line) == {"id", "index", "output", "prompt_tokens", "completion_tokens"}
        assert line["prompt_tokens"] > 0 and 0 < line["completion_tokens"] <= 8 and line["output"].strip()
    assert sum(x["prompt_tokens"] for x in lines) == result["prompt_tokens"]
    assert sum(x["completion_tokens"] for x in lines) == result["completion_tokens"]
    info = node.cli_json("show", "local/answers", "--type", "dataset")
    declared = info["card"]["declared"]
    assert declared["source_model"] == "local/smol" and declared["job"] == job["id"]
    assert declared["dataset"] == "local/questions" and info["commit"] == result["commit"]


def test_bad_batch_specs_are_refused(pool) -> None:
    node, _ = pool
    bad = node.home.parent / "bad-questions"
    bad.mkdir()
    (bad / "rows.jsonl").write_text('{"prompt": "fine"}\n{"messages": [{"role": "robot", "content": "x"}]}\n')
    node.cli_json("push", str(bad), "local/bad-questions", "--type", "dataset")
    (node.home.parent / "not-gguf").mkdir()
    (node.home.parent / "not-gguf" / "config.json").write_text("{}")
    node.cli_json("push", str(node.home.parent / "not-gguf"), "local/not-gguf")
    cases = {
        "model 'local/nope' does not exist": spec(model="local/nope"),
        "dataset 'local/nope' does not exist": spec(dataset="local/nope"),
        "has no GGUF file": spec(model="local/not-gguf"),
        "line 2": spec(dataset="local/bad-questions"),
        "'max_tokens' must be an integer": spec(max_tokens="8"),
        "'temperature' must be between": spec(temperature=5),
        "'shard_size' must be between": spec(shard_size=0),
        "unknown spec key": spec(prompt="hi"),
        "'output' must be a repository name": spec(output=None),
    }
    for needle, body in cases.items():
        reply = pool_helpers.submit(node, "batch-infer", body)
        assert reply.status_code == 400, (needle, reply.text)
        assert needle in reply.json()["error"]["message"], (needle, reply.json())
    bob = node.cli_json("user", "create", "bob")["token"]
    forbidden = pool_helpers.submit(node, "batch-infer", spec(output="local/theirs"), token=bob)
    assert forbidden.status_code == 403
