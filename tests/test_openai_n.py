"""OpenAI ``n``: several choices per request, each its own metered call, through a real node."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest

from nodes import Node

MODEL = "local/smol"
ASK = [{"role": "user", "content": "Write one short sentence about the sea."}]


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


@pytest.fixture(scope="module")
def client(served: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token, max_retries=0, timeout=600)


def records_since(node: Node, since: str) -> list[dict]:
    time.sleep(0.5)  # records land as each call ends
    reply = httpx.get(
        f"{node.url}/api/usage",
        params={"model": MODEL, "since": since},
        headers={"Authorization": f"Bearer {node.token}"},
    )
    return reply.json()["records"]


def now() -> str:
    time.sleep(0.5)  # let earlier calls' records land first
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_chat_n_choices_each_metered_and_reproducible(served: Node, client: openai.OpenAI) -> None:
    # llama.cpp reuses a cached prompt by re-evaluating only its last token, whose logits can differ
    # slightly from evaluating the whole prompt (cold, or an exact hit after a 1-token reply); a reply of
    # several tokens leaves the cache as each choice below leaves it, so every choice (in both
    # requests) starts from the same state, which is what this test is about
    client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, temperature=0)
    since = now()
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, n=3, max_tokens=8, temperature=0.8, seed=1
    )
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert all(c.message.content for c in first.choices)
    records = records_since(served, since)
    assert len(records) == 3  # three completions billed
    assert first.usage.completion_tokens == sum(r["completion_tokens"] for r in records)
    assert first.usage.prompt_tokens == sum(r["prompt_tokens"] for r in records)  # the prompt, n times
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    again = client.chat.completions.create(
        model=MODEL, messages=ASK, n=3, max_tokens=8, temperature=0.8, seed=1
    )
    assert [c.message.content for c in again.choices] == [c.message.content for c in first.choices]


def test_completions_n(served: Node, client: openai.OpenAI) -> None:
    since = now()
    reply = client.completions.create(
        model=MODEL, prompt="The sea is", n=2, max_tokens=4, temperature=0.8, seed=7
    )
    assert [c.index for c in reply.choices] == [0, 1]
    records = records_since(served, since)
    assert len(records) == 2
    assert reply.usage.completion_tokens == sum(r["completion_tokens"] for r in records)


def test_refusals_name_the_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model=MODEL, messages=ASK, n=9, max_tokens=2)
    assert too_many.value.body["param"] == "n" and "'n'" in str(too_many.value)
    with pytest.raises(openai.BadRequestError) as best:
        client.completions.create(model=MODEL, prompt="Hi", best_of=2, max_tokens=2)
    assert best.value.body["param"] == "best_of"


def test_chat_n_streamed_equals_unstreamed(served: Node, client: openai.OpenAI) -> None:
    """A streamed n=2 answer is the non-streamed one, chunk by chunk under each choice's index, and its
    usage chunk sums the two calls' usage records."""
    asked = {"model": MODEL, "messages": ASK, "n": 2, "max_tokens": 8, "temperature": 0.9, "seed": 3}
    whole = client.chat.completions.create(**asked)
    since = now()
    stream = client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    ids, usage = set(), None
    for chunk in stream:
        ids.add(chunk.id)
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert len(ids) == 1  # one response
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finishes == {c.index: c.finish_reason for c in whole.choices}
    records = records_since(served, since)
    assert len(records) == 2 and all(r["stream"] for r in records)
    assert usage.completion_tokens == sum(r["completion_tokens"] for r in records)
    assert usage.prompt_tokens == sum(r["prompt_tokens"] for r in records)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert ids == {f"chatcmpl-{min(records, key=lambda r: r['created_at'])['id']}"}


def test_completions_n_streamed_equals_unstreamed(served: Node, client: openai.OpenAI) -> None:
    asked = {"model": MODEL, "prompt": "The sea is", "n": 3, "max_tokens": 6, "temperature": 0.9, "seed": 11}
    whole = client.completions.create(**asked)
    since = now()
    stream = client.completions.create(**asked, stream=True, stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts == {c.index: c.text for c in whole.choices}
    records = records_since(served, since)
    assert len(records) == 3
    assert usage.completion_tokens == sum(r["completion_tokens"] for r in records)
    assert usage.prompt_tokens == sum(r["prompt_tokens"] for r in records)
