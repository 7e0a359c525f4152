"""One recipe for a chat call (``Runtime.chat``): a path served as a model (``path/NAME``) answers on
Ollama's /api/chat and /api/generate as it does on /v1/chat/completions, with the same answer and the
same metering (one usage record, backend ``path``, with the tokens of all its inner calls)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from nodes import Node

MODEL = "local/smol"
PATH = "path/short-answer"
QUESTION = "What is 2 plus 3?"


def graph(name: str = "short-answer", model: str = MODEL) -> dict:
    return {
        "schema": "iollm.workflow/1",
        "name": name,
        "nodes": [
            {
                "id": "answer",
                "kind": "model",
                "model": model,
                "prompt": "{{input}}\nAnswer:",
                "params": {"max_tokens": 8, "temperature": 0},
            },
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "answer", "to": "out"}],
    }


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    reply = httpx.post(
        f"{node.url}/api/paths", json={"name": "short-answer", "graph": graph()}, headers=auth(node)
    )
    assert reply.status_code == 200, reply.text
    return node


def auth(node: Node) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token}"}


def path_records(node: Node) -> list[dict]:
    time.sleep(0.3)  # usage records are written off the response path
    reply = httpx.get(f"{node.url}/api/usage", params={"model": PATH}, headers=auth(node))
    return [r for r in reply.json()["records"] if r["backend"] == "path"]


def test_path_answers_on_ollama_chat_as_on_openai(served: Node) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    openai_reply = httpx.post(
        f"{served.url}/v1/chat/completions",
        json={"model": PATH, "messages": messages},
        headers=auth(served),
        timeout=120,
    )
    assert openai_reply.status_code == 200, openai_reply.text
    answer = openai_reply.json()["choices"][0]["message"]["content"]
    usage = openai_reply.json()["usage"]
    assert answer.strip() and usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0

    single = httpx.post(
        f"{served.url}/api/chat",
        json={"model": PATH, "messages": messages, "stream": False},
        headers=auth(served),
        timeout=120,
    )
    assert single.status_code == 200, single.text
    body = single.json()
    assert body["done"] is True and body["model"] == PATH
    assert body["message"] == {"role": "assistant", "content": answer}
    assert (body["prompt_eval_count"], body["eval_count"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )

    with httpx.stream(
        "POST",
        f"{served.url}/api/chat",
        json={"model": PATH, "messages": messages},
        headers=auth(served),
        timeout=120,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "".join(line["message"]["content"] for line in lines) == answer
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )

    generated = httpx.post(
        f"{served.url}/api/generate",
        json={"model": PATH, "prompt": QUESTION, "stream": False},
        headers=auth(served),
        timeout=120,
    ).json()
    assert generated["response"] == answer and generated["eval_count"] == usage["completion_tokens"]

    records = sorted(path_records(served), key=lambda r: r["id"])[-4:]  # ids are time-ordered
    assert [r["stream"] for r in records] == [False, False, True, False]
    for record in records:
        assert record["model"] == PATH and record["kind"] == "chat" and record["status"] == "ok"
        assert (record["prompt_tokens"], record["completion_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )


def test_path_errors_on_ollama_routes(served: Node) -> None:
    missing = httpx.post(
        f"{served.url}/api/chat",
        json={"model": "path/none", "messages": [{"role": "user", "content": "hi"}]},
        headers=auth(served),
    )
    assert missing.status_code == 404 and "does not exist" in missing.json()["error"]
    no_question = httpx.post(
        f"{served.url}/api/chat",
        json={"model": PATH, "messages": [{"role": "system", "content": "Be brief."}], "stream": False},
        headers=auth(served),
    )
    assert no_question.status_code == 400 and "user message" in no_question.json()["error"]
    # Ollama answers an empty chat with done_reason "load" (clients use it to warm a model up).
    empty = httpx.post(f"{served.url}/api/chat", json={"model": PATH, "messages": []}, headers=auth(served))
    assert empty.status_code == 200 and empty.json()["done_reason"] == "load"


def test_a_path_may_call_a_path_but_never_itself(served: Node) -> None:
    def publish(name: str, model: str) -> None:
        graph_json = graph(name, model)
        graph_json["nodes"][0]["prompt"] = "{{input}}"
        reply = httpx.post(
            f"{served.url}/api/paths", json={"name": name, "graph": graph_json}, headers=auth(served)
        )
        assert reply.status_code == 200, reply.text

    def ask(model: str) -> dict:
        body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "stream": False}
        reply = httpx.post(f"{served.url}/api/chat", json=body, headers=auth(served), timeout=120)
        assert reply.status_code == 200, reply.text
        return reply.json()

    publish("outer", PATH)
    inner, outer = ask(PATH), ask("path/outer")
    assert outer["message"]["content"] == inner["message"]["content"]
    assert (outer["prompt_eval_count"], outer["eval_count"]) == (
        inner["prompt_eval_count"],
        inner["eval_count"],
    )

    publish("loop", "path/loop")
    assert ask("path/loop")["message"]["content"] == ""
    time.sleep(0.3)
    reply = httpx.get(f"{served.url}/api/usage", params={"model": "path/loop"}, headers=auth(served))
    (record,) = reply.json()["records"]
    assert record["status"] == "error" and "path/loop calls itself" in record["error"]
    # A path answers chat calls only.
    completion = httpx.post(
        f"{served.url}/v1/completions", json={"model": PATH, "prompt": "2+3="}, headers=auth(served)
    )
    assert completion.status_code == 400 and "chat" in completion.json()["error"]["message"]
