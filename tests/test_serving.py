"""OpenAI- and Ollama-compatible serving through a real node, with the real openai client."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest

from iollm.runtime.backends import ChatMessage, Counts, GenerationParams
from iollm.runtime.backends.remote import RemoteBackend
from nodes import Node

MODEL = "local/smol"


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


@pytest.fixture(scope="module")
def client(served: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token, max_retries=0)


def usage_records(node: Node, **params: str) -> list[dict]:
    reply = httpx.get(
        f"{node.url}/api/usage", params=params, headers={"Authorization": f"Bearer {node.token}"}
    )
    return reply.json()["records"]


def test_models_list(client: openai.OpenAI) -> None:
    assert MODEL in [m.id for m in client.models.list()]


def test_chat_with_exact_usage(client: openai.OpenAI, served: Node) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12, temperature=0
    )
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 10
    time.sleep(0.3)
    record = next(r for r in usage_records(served) if reply.id.endswith(r["id"]))
    assert record["prompt_tokens"] == reply.usage.prompt_tokens
    assert record["completion_tokens"] == reply.usage.completion_tokens
    assert record["repo"] == MODEL and len(record["commit"]) == 40 and record["backend"] == "llama.cpp"


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces)
    assert usage is not None and usage.completion_tokens > 0
    assert finish in ("stop", "length")
    plain = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=20,
        temperature=0,
    )
    assert plain.choices[0].message.content == "".join(pieces)  # greedy: same text streamed or not


def test_stop_max_tokens_and_seed(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    full = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=40, temperature=0)
    text = full.choices[0].message.content
    assert "4" in text
    stopped = client.chat.completions.create(
        model=MODEL, messages=ask, max_tokens=40, temperature=0, stop=["4"]
    )
    assert "4" not in stopped.choices[0].message.content
    assert stopped.choices[0].message.content == text[: text.index("4")]
    short = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=3, temperature=0)
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    ask = [{"role": "user", "content": "Write a sentence about the sea."}]
    a = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=20, temperature=1.0, seed=7)
    b = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=20, temperature=1.0, seed=7)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_completions_and_embeddings(client: openai.OpenAI) -> None:
    done = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert done.choices[0].text and done.usage.completion_tokens <= 5
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == done.choices[0].text
    vectors = client.embeddings.create(model=MODEL, input=["a cat", "a dog", "quantum chromodynamics"])
    assert len(vectors.data) == 3 and len(vectors.data[0].embedding) == 576
    floats = client.embeddings.create(model=MODEL, input="a cat", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors.data[0].embedding, abs=1e-6)
    assert vectors.usage.prompt_tokens > 0
    with pytest.raises(openai.BadRequestError) as refused:  # never a full-size vector in silence
        client.embeddings.create(model=MODEL, input="a cat", dimensions=64)
    assert refused.value.body["param"] == "dimensions"


def test_error_shapes(client: openai.OpenAI, served: Node, tmp_path: Path) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="local/nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    raw = httpx.post(
        f"{served.url}/v1/chat/completions", content=b"{", headers={"Authorization": f"Bearer {served.token}"}
    )
    assert raw.status_code == 400 and set(raw.json()["error"]) >= {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 6000}])
    assert too_long.value.body["code"] == "context_length_exceeded"
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\x00" * 4096)
    served.cli_json("push", str(tmp_path / "broken.gguf"), "local/broken")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="local/broken", messages=[{"role": "user", "content": "hi"}])
    assert httpx.get(f"{served.url}/health").status_code == 200
    ok = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert ok.usage.completion_tokens <= 2


def test_inference_needs_a_token(served: Node) -> None:
    anonymous = httpx.post(f"{served.url}/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert anonymous.status_code == 401 and "token" in anonymous.json()["error"]["message"]
    wrong = openai.OpenAI(base_url=f"{served.url}/v1", api_key="iollm_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])


def test_ollama_api(served: Node) -> None:
    auth = {"Authorization": f"Bearer {served.token}"}
    tags = httpx.get(f"{served.url}/api/tags", headers=auth).json()["models"]
    entry = next(m for m in tags if m["name"] == f"{MODEL}:latest")
    assert entry["details"]["family"] == "llama" and entry["details"]["quantization_level"] == "Q4_1"
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "options": {"num_predict": 6},
    }
    with httpx.stream("POST", f"{served.url}/api/chat", json=body, headers=auth, timeout=60) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] <= 6
    assert "".join(line["message"]["content"] for line in lines)
    single = httpx.post(
        f"{served.url}/api/generate",
        json={"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}},
        headers=auth,
    ).json()
    assert single["done"] and single["eval_count"] <= 4 and "response" in single
    show = httpx.post(f"{served.url}/api/show", json={"model": MODEL}, headers=auth).json()
    assert show["modelfile"].startswith("FROM local/smol@") and show["details"]["format"] == "gguf"
    missing = httpx.post(f"{served.url}/api/chat", json={"model": "local/none", "messages": []}, headers=auth)
    assert missing.status_code == 404 and isinstance(missing.json()["error"], str)


def test_client_disconnect_stops_generation(served: Node, client: openai.OpenAI) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 2000,
        "temperature": 1.0,
        "seed": 3,
        "stream": True,
    }
    with httpx.stream(
        "POST",
        f"{served.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {served.token}"},
        timeout=60,
    ) as response:
        for count, _ in enumerate(response.iter_lines()):
            if count > 10:
                break  # leave mid-stream
    time.sleep(1.5)
    record = usage_records(served, model=MODEL)[0]
    assert record["status"] == "cancelled"
    assert record["completion_tokens"] < 200
    started = time.perf_counter()
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert time.perf_counter() - started < 30  # the engine is free again


def test_usage_is_exact_under_concurrency(served: Node, client: openai.OpenAI) -> None:
    time.sleep(0.5)  # let earlier calls' records land first
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def call(i: int):
        return client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Say the number {i}."}],
            max_tokens=8,
            temperature=0,
        )

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(call, range(8)))
    time.sleep(0.5)
    records = {r["id"]: r for r in usage_records(served, model=MODEL, since=since)}
    for reply in replies:
        record = records[reply.id.removeprefix("chatcmpl-")]
        assert record["prompt_tokens"] == reply.usage.prompt_tokens
        assert record["completion_tokens"] == reply.usage.completion_tokens
    totals = served.cli_json("usage", "--model", MODEL, "--since", since)["totals"]
    assert totals["calls"] == len(records) == 8
    assert totals["completion_tokens"] == sum(r.usage.completion_tokens for r in replies)


def test_remote_backend_against_a_real_server(served: Node) -> None:
    for api, url in (("openai", f"{served.url}/v1"), ("ollama", served.url)):
        backend = RemoteBackend(url, MODEL, api=api, api_key=served.token)
        counts = Counts()
        pieces = list(
            backend.chat(
                [ChatMessage("user", "Say hi.")],
                GenerationParams(max_tokens=5, temperature=0),
                counts,
                threading.Event(),
            )
        )
        assert "".join(p.text for p in pieces) and pieces[-1].finish_reason in ("stop", "length")
        assert counts.completion_tokens <= 5 and counts.prompt_tokens > 0
        assert len(backend.embed(["hello"]).vectors[0]) == 576
        backend.close()


def test_run_command_prints_one_answer(served: Node) -> None:
    out = served.cli("run", MODEL, "Say yes.", "--max-tokens", "4", "--temperature", "0")
    assert out.stdout.strip()
    data = served.cli_json("run", MODEL, "Say yes.", "--max-tokens", "4", "--temperature", "0")
    assert data["answer"].strip() == out.stdout.strip() and data["usage"]["completion_tokens"] <= 4


def test_least_recently_used_model_is_unloaded(node_factory, smollm2_gguf: Path) -> None:
    from iollm import assets

    node = node_factory("--no-seed", "--memory-budget", str(300 * 1000 * 1000), name="budget")
    node.cli_json("push", str(smollm2_gguf), "local/small")
    node.cli_json("push", str(assets.ensure_model("gemma3", progress=False)), "local/gemma")
    auth = {"Authorization": f"Bearer {node.token}"}
    for model in ("local/small", "local/gemma"):
        reply = httpx.post(
            f"{node.url}/v1/completions",
            json={"model": model, "prompt": "Hi", "max_tokens": 1},
            headers=auth,
            timeout=120,
        )
        assert reply.status_code == 200
    loaded = [m["name"] for m in httpx.get(f"{node.url}/api/ps").json()["models"]]
    assert len(loaded) == 1  # 98 MB + 253 MB do not fit in 300 MB: the first one was unloaded
