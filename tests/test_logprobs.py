"""Legacy completions ``logprobs``/``echo`` through a real node with the real openai client: prompt
scoring (lm-evaluation-harness style log-likelihoods) checked against an independent computation,
logprobs of generated tokens, streaming, refusals that name the parameter, and the worker-process and
transformers paths."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from iollm.runtime.backends import Counts, GenerationParams
from nodes import Node

MODEL = "local/smol-lp"
TEXT = "The capital of France is Paris. The capital of Germany is Berlin. Ünïcödé ☃ too."


@pytest.fixture(scope="module")
def served(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed", "--anonymous-inference")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    return node


@pytest.fixture(scope="module")
def client(served: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.token)


@pytest.fixture(scope="module")
def reference(smollm2_gguf: Path):
    """An independent engine that keeps every position's logits (``logits_all``)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(smollm2_gguf), n_ctx=512, logits_all=True, verbose=False)
    yield llm
    llm.close()


def log_softmax(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def expected_prompt_logprobs(llm, text: str) -> list[float]:
    """log p(token_i | tokens before it) for every text token after the first, from Llama.eval's scores."""
    tokens = llm.tokenize(text.encode(), add_bos=True, special=False)
    llm.reset()
    llm.eval(tokens)
    rows = log_softmax(np.array(llm.scores[: len(tokens)]))
    first = 1 if tokens[0] == llm.token_bos() else 0
    return [float(rows[i - 1, tokens[i]]) for i in range(first + 1, len(tokens))]


def score(client: openai.OpenAI, prompt: str, max_tokens: int = 0):
    """Score ``prompt`` (echo + logprobs), generating ``max_tokens`` greedy tokens after it."""
    return client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=max_tokens, echo=True, logprobs=1, temperature=0
    )


def loglikelihood(client: openai.OpenAI, context: str, continuation: str) -> float:
    """Sum of the continuation's token logprobs, the way lm-evaluation-harness asks for it."""
    logprobs = score(client, context + continuation).choices[0].logprobs
    pairs = zip(logprobs.text_offset, logprobs.token_logprobs, strict=True)
    return sum(lp for offset, lp in pairs if offset >= len(context))


def test_echo_scores_the_prompt_like_an_independent_engine(client: openai.OpenAI, reference) -> None:
    reply = score(client, TEXT)
    choice = reply.choices[0]
    logprobs = choice.logprobs
    assert choice.text == TEXT and choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 0
    assert reply.usage.prompt_tokens == len(reference.tokenize(TEXT.encode(), add_bos=True))
    assert "".join(logprobs.tokens) == TEXT  # the tokens make up exactly the echoed text
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None  # as in OpenAI
    expected = expected_prompt_logprobs(reference, TEXT)
    got = logprobs.token_logprobs[1:]
    assert len(got) == len(expected) == len(logprobs.tokens) - 1
    assert got == pytest.approx(expected, abs=2e-3)
    assert sum(got) == pytest.approx(sum(expected), abs=1e-2)
    for token, value, top in zip(logprobs.tokens[1:], got, logprobs.top_logprobs[1:], strict=True):
        assert 1 <= len(top) <= 2  # the best token, plus the actual one when it is not the best
        assert max(top.values()) >= value and value <= 0
        assert top.get(token, value) == value


def test_the_more_likely_continuation_wins(client: openai.OpenAI) -> None:
    for context, right, wrong in (
        ("The capital of France is", " Paris", " a banana"),
        ("One, two, three, four,", " five", " purple"),
    ):
        assert loglikelihood(client, context, right) > loglikelihood(client, context, wrong)


def test_scoring_then_generating_one_token(client: openai.OpenAI) -> None:
    """lm-evaluation-harness's own request (max_tokens=1): prompt scores, then the greedy next token."""
    prompt = "The capital of France is"
    scored = score(client, prompt).choices[0].logprobs
    both = score(client, prompt, max_tokens=1).choices[0]
    plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1, temperature=0).choices[0]
    assert both.text == prompt + plain.text
    n = len(scored.tokens)
    assert both.logprobs.tokens[:n] == scored.tokens
    assert both.logprobs.token_logprobs[1:n] == pytest.approx(scored.token_logprobs[1:], abs=1e-5)
    assert both.logprobs.tokens[n:] == [plain.text]
    generated = both.logprobs.token_logprobs[n]
    assert generated == max(both.logprobs.top_logprobs[n].values())  # greedy: it was the best token
    assert both.logprobs.text_offset[n] == len(prompt)


def test_logprobs_of_generated_tokens(client: openai.OpenAI, reference) -> None:
    prompt = "The capital of France is Paris. The capital of Germany is"
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=3)
    choice = reply.choices[0]
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == reply.usage.completion_tokens == 6
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset[0] == len(prompt)  # offsets count from the start of the prompt
    for value, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert len(top) == 3 and value == max(top.values())  # greedy picks the best
    # the same greedy steps on the independent engine give the same tokens and logprobs
    tokens = reference.tokenize(prompt.encode(), add_bos=True)
    reference.reset()
    reference.eval(tokens)
    expected = []
    for _ in range(6):
        row = log_softmax(np.array(reference.scores[reference.n_tokens - 1]))
        best = int(row.argmax())
        expected.append(float(row[best]))
        reference.eval([best])
    assert logprobs.token_logprobs == pytest.approx(expected, abs=2e-3)


def test_streaming_gives_the_same_logprobs(client: openai.OpenAI) -> None:
    prompt = "Water boils at"
    plain = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=4, temperature=0, logprobs=2, echo=True
    ).choices[0]
    text, tokens, values, offsets = "", [], [], []
    for chunk in client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=4, temperature=0, logprobs=2, echo=True, stream=True
    ):
        for choice in chunk.choices:
            text += choice.text
            if choice.logprobs:
                tokens += choice.logprobs.tokens
                values += choice.logprobs.token_logprobs
                offsets += choice.logprobs.text_offset
    assert text == plain.text and text.startswith(prompt)
    assert tokens == plain.logprobs.tokens and offsets == plain.logprobs.text_offset
    assert values[0] is None and values[1:] == pytest.approx(plain.logprobs.token_logprobs[1:], abs=1e-5)


def test_bad_values_are_refused_naming_the_parameter(client: openai.OpenAI, served: Node) -> None:
    for value in (6, -1):
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model=MODEL, prompt="Hi", max_tokens=1, logprobs=value)
        assert refused.value.body["param"] == "logprobs" and "logprobs" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as zero:
        client.completions.create(model=MODEL, prompt="Hi", max_tokens=0, logprobs=1)
    assert zero.value.body["param"] == "max_tokens" and "echo" in zero.value.body["message"]
    auth = {"Authorization": f"Bearer {served.token}"}
    for value in (True, "1", 1.5):
        raw = httpx.post(
            f"{served.url}/v1/completions",
            json={"model": MODEL, "prompt": "Hi", "max_tokens": 1, "logprobs": value},
            headers=auth,
        )
        assert raw.status_code == 400 and raw.json()["error"]["param"] == "logprobs", raw.text
    chat = httpx.post(
        f"{served.url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "logprobs": 2},
        headers=auth,
    )
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "logprobs"
    echoed = client.completions.create(model=MODEL, prompt="Hi there", max_tokens=0, echo=True)
    assert echoed.choices[0].text == "Hi there" and echoed.choices[0].logprobs is None


def test_a_remote_backend_refuses_logprobs(client: openai.OpenAI, served: Node, tmp_path: Path) -> None:
    envfile = tmp_path / "Envfile"
    envfile.write_text(f"FROM {served.url}/v1 {MODEL}\n")
    served.cli_json("create", "local/far-smol-lp", "-f", str(envfile))
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="local/far-smol-lp", prompt="Hi", max_tokens=1, logprobs=1)
    assert refused.value.body["param"] == "logprobs"
    assert client.completions.create(model="local/far-smol-lp", prompt="Hi", max_tokens=1).choices


@pytest.mark.slow
def test_logprobs_survive_the_worker_process(client: openai.OpenAI, served: Node, tmp_path: Path) -> None:
    """An environment with REQUIRES runs its model in a worker process: same numbers over IPC."""
    envfile = tmp_path / "Envfile"
    envfile.write_text(f"FROM {MODEL}\nREQUIRES python-slugify==9.0.0\n")
    served.cli_json("create", "local/smol-lp-worker", "-f", str(envfile))
    here = score(client, TEXT, max_tokens=2).choices[0]
    there = client.completions.create(
        model="local/smol-lp-worker", prompt=TEXT, max_tokens=2, echo=True, logprobs=1, temperature=0
    ).choices[0]
    workers = httpx.get(
        f"{served.url}/api/environments/workers", headers={"Authorization": f"Bearer {served.token}"}
    ).json()["workers"]
    assert any(w["model"] == "local/smol-lp-worker" and w["alive"] for w in workers)
    assert there.text == here.text
    assert there.logprobs.tokens == here.logprobs.tokens
    assert there.logprobs.text_offset == here.logprobs.text_offset
    assert there.logprobs.token_logprobs[0] is None
    assert there.logprobs.token_logprobs[1:] == pytest.approx(here.logprobs.token_logprobs[1:], abs=1e-4)
    pairs = zip(there.logprobs.top_logprobs[1:], here.logprobs.top_logprobs[1:], strict=True)
    assert all(a.keys() == b.keys() for a, b in pairs)


@pytest.mark.slow
def test_transformers_backend_scores_like_a_full_forward_pass(smollm2_safetensors: Path) -> None:
    import torch

    from iollm.runtime.backends.transformers import SCORE_CHUNK, TransformersBackend

    backend = TransformersBackend(smollm2_safetensors, n_ctx=2048, dtype="float32")
    try:
        text = " ".join([TEXT] * 4)  # longer than one scoring chunk
        tokens = backend.tokenizer.encode(text, add_special_tokens=True)
        assert len(tokens) > SCORE_CHUNK
        params = GenerationParams(max_tokens=3, temperature=0, logprobs=2, prompt_logprobs=True)
        pieces = list(backend.complete(text, params, Counts(), threading.Event()))
        entries = [e for p in pieces for e in p.logprobs or ()]
        generated = "".join(p.text for p in pieces)
        with torch.inference_mode():
            logits = backend.model(input_ids=torch.tensor([tokens])).logits[0].double()
        rows = torch.log_softmax(logits, dim=-1)
        expected = [float(rows[i - 1, tokens[i]]) for i in range(1, len(tokens))]
        assert entries[0].logprob is None and "".join(e.token for e in entries[: len(tokens)]) == text
        assert [e.logprob for e in entries[1 : len(tokens)]] == pytest.approx(expected, abs=1e-3)
        assert "".join(e.token for e in entries[len(tokens) :]) == generated
        assert len(entries) == len(tokens) + 3
        first = entries[len(tokens)]
        assert first.logprob == pytest.approx(float(rows[-1].max()), abs=1e-3)
    finally:
        backend.close()


def test_options_sharing_a_context_score_as_if_alone(smollm2_gguf: Path) -> None:
    """The KV cache of a shared context is reused between prompts; the scores must not change."""
    import threading

    from iollm.runtime.backends.base import Counts, GenerationParams
    from iollm.runtime.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(smollm2_gguf, n_ctx=512)

    def score(prompt: str) -> list[tuple[str, float | None]]:
        params = GenerationParams(max_tokens=0, temperature=0.0, logprobs=1, prompt_logprobs=True)
        pieces = list(backend.complete(prompt, params, Counts(), threading.Event()))
        return [(e.token, e.logprob) for p in pieces for e in (p.logprobs or [])]

    try:
        context = "Question: Which gas do plants take in from the air to make their food?\nAnswer:"
        options = [" carbon dioxide", " oxygen", " nitrogen and some water"]
        shared = [score(context + option) for option in options]
        alone = []
        for option in options:
            score("An unrelated prompt that shares nothing.")
            alone.append(score(context + option))
        for a, b in zip(shared, alone, strict=True):
            assert [t for t, _ in a] == [t for t, _ in b]
            assert [x for _, x in a] == pytest.approx([x for _, x in b], abs=2e-3)
        # a generation after a scoring still starts from the right state
        params = GenerationParams(max_tokens=4, temperature=0.0)
        after = "".join(
            p.text for p in backend.complete(context + options[0], params, Counts(), threading.Event())
        )
        score("Another unrelated prompt.")
        fresh = "".join(
            p.text for p in backend.complete(context + options[0], params, Counts(), threading.Event())
        )
        assert after == fresh
    finally:
        backend.close()
