"""A stream the client drops after a few tokens is billed for exactly the tokens the engine generated
(issue 15, item 4): not 0 (LiteLLM's streamed calls recorded as $0) and not ``max_tokens``.

The engine keeps generating until it notices the client left, so the client never sees every token
it was billed for. The count is checked against the engine itself instead: replaying the same greedy
call with ``max_tokens`` equal to the billed count must produce an answer that starts with everything
the client received, hit that limit, and be exactly that many tokens by llama-cpp-python's own
tokenizer; and the dropped call must have been cut short (``cancelled``) well below ``max_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from nodes import Node

MODEL = "local/smol"
MAX_TOKENS = 400
PROMPT = "Write the numbers from 1 to 300 in words, separated by commas."
READ = 4  # content chunks the client reads before it drops the stream


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf: Path):
    from llama_cpp import Llama

    return Llama(model_path=str(smollm2_gguf), vocab_only=True, verbose=False)


def usage_since(node: Node, since: str, count: int) -> list[dict]:
    """The node's usage records written since ``since`` (oldest first), once ``count`` of them are in."""
    deadline = time.monotonic() + 60
    while True:
        reply = httpx.get(
            f"{node.url}/api/usage",
            params={"model": MODEL, "since": since},
            headers={"Authorization": f"Bearer {node.token}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        records = sorted(reply.json()["records"], key=lambda r: r["seq"])
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_billed_as_generated(
    record: dict, received: str, replay: str, replay_record: dict, tokenizer
) -> None:
    billed = record["completion_tokens"]
    assert record["status"] == "cancelled", record
    assert record["stream"] is True
    seen = len(tokenizer.tokenize(received.encode(), add_bos=False, special=True))
    assert seen <= billed < MAX_TOKENS, (seen, billed)  # not 0, not max_tokens
    # The same greedy call limited to the billed count: the engine generates exactly that many tokens,
    # the same ones the client was streamed, and llama-cpp-python counts them the same.
    assert replay_record["completion_tokens"] == billed
    assert replay_record["prompt_tokens"] == record["prompt_tokens"]
    assert replay.startswith(received), (received, replay)
    assert len(tokenizer.tokenize(replay.encode(), add_bos=False, special=True)) == billed


def test_openai_stream_dropped_after_a_few_chunks(served: Node, tokenizer) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token)
    since = now()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
    )
    received, chunks, ident = "", 0, ""
    for chunk in stream:
        ident = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            received += chunk.choices[0].delta.content
            chunks += 1
            if chunks == READ:
                break
    stream.close()
    [record] = usage_since(served, since, 1)
    assert ident == f"chatcmpl-{record['id']}"
    replay = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=record["completion_tokens"],
        temperature=0,
    )
    assert replay.choices[0].finish_reason == "length"
    assert replay.usage.completion_tokens == record["completion_tokens"]
    records = usage_since(served, since, 2)
    assert len(records) == 2  # one record per call: the dropped stream is not recorded twice
    check_billed_as_generated(record, received, replay.choices[0].message.content, records[1], tokenizer)


def test_ollama_chat_stream_dropped_after_a_few_chunks(served: Node, tokenizer) -> None:
    client = ollama.Client(host=served.url, headers={"Authorization": f"Bearer {served.token}"})
    options = {"temperature": 0, "num_predict": MAX_TOKENS}
    since = now()
    parts: Iterator = client.chat(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], options=options, stream=True
    )
    received, chunks = "", 0
    for part in parts:
        if part.message.content:
            received += part.message.content
            chunks += 1
            if chunks == READ:
                break
    parts.close()  # closes the HTTP response: the node sees the client leave
    [record] = usage_since(served, since, 1)
    replay = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        options={**options, "num_predict": record["completion_tokens"]},
    )
    assert replay.done_reason == "length"
    assert replay.eval_count == record["completion_tokens"]
    records = usage_since(served, since, 2)
    assert len(records) == 2
    check_billed_as_generated(record, received, replay.message.content, records[1], tokenizer)
