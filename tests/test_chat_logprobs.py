"""Chat ``logprobs``/``top_logprobs`` through a real node and the unmodified openai client, in OpenAI's
chat shape, checked against the log-likelihood of the same tokens computed directly with
llama-cpp-python; streamed too; bad values refused naming the parameter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openai
import pytest

from iollm.runtime.backends import ChatMessage
from iollm.runtime.templates import pick_template
from nodes import Node

MODEL = "local/smol-chat-lp"
ASK = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def client(node_factory, smollm2_gguf: Path) -> openai.OpenAI:
    node: Node = node_factory("--no-seed")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return openai.OpenAI(base_url=f"{node.url}/v1", api_key=node.token)


@pytest.fixture(scope="module")
def reference(smollm2_gguf: Path):
    """An independent engine that keeps every position's logits."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(smollm2_gguf), n_ctx=512, logits_all=True, verbose=False, n_threads=1)
    yield llm
    llm.close()


def log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def test_logprobs_sum_to_the_completion_log_likelihood(client: openai.OpenAI, reference) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3
    )
    choice = reply.choices[0]
    content = choice.logprobs.content
    # one entry per generated token: eight, or fewer when the model ends its answer (builds of llama.cpp
    # for other CPUs round differently, and greedy decoding may then stop a token earlier)
    assert len(content) == reply.usage.completion_tokens
    assert len(content) == 8 or (4 <= len(content) < 8 and choice.finish_reason == "stop")
    assert b"".join(bytes(e.bytes) for e in content).decode() == choice.message.content
    assert "".join(e.token for e in content) == choice.message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and entry.logprob == pytest.approx(values[0])
    # the same prompt and tokens, scored directly by llama-cpp-python
    template = pick_template(reference.metadata.get("tokenizer.chat_template"), None)
    prompt = template.render([ChatMessage(m["role"], m["content"]) for m in ASK])
    tokens = reference.tokenize(prompt.encode(), add_bos=True, special=True)
    generated = reference.tokenize(choice.message.content.encode(), add_bos=False, special=False)
    assert len(generated) == len(content)
    reference.reset()
    reference.eval(tokens)
    expected = []
    for token in generated:  # one token at a time, as a generation decodes them
        expected.append(float(log_softmax(np.array(reference.scores[reference.n_tokens - 1]))[token]))
        reference.eval([token])
    got = [e.logprob for e in content]
    assert got == pytest.approx(expected, abs=2e-3)
    assert sum(got) == pytest.approx(sum(expected), abs=1e-2)


def test_streamed_logprobs_match(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0, max_tokens=6, logprobs=True, top_logprobs=2
    ).choices[0]
    entries = []
    for chunk in client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0, max_tokens=6, logprobs=True, top_logprobs=2, stream=True
    ):
        for choice in chunk.choices:
            if choice.logprobs and choice.logprobs.content:
                entries += choice.logprobs.content
    assert [e.token for e in entries] == [e.token for e in plain.logprobs.content]
    assert [e.logprob for e in entries] == pytest.approx(
        [e.logprob for e in plain.logprobs.content], abs=1e-5
    )
    assert all(len(e.top_logprobs) == 2 for e in entries)


def test_without_top_logprobs_and_refusals(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=3, logprobs=True)
    assert all(e.top_logprobs == [] for e in reply.choices[0].logprobs.content)
    none = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2)
    assert none.choices[0].logprobs is None
    for kwargs, param in (
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, **kwargs)
        assert refused.value.body["param"] == param
