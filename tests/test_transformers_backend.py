"""The transformers backend, driven directly on the SmolLM2 safetensors folder: exact counts, greedy and
seeded determinism, stop strings, cancellation, context limits and embeddings."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from iollm.runtime.backends import ChatMessage, ContextTooLong, Counts, GenerationParams
from iollm.runtime.backends.transformers import TransformersBackend

QUESTION = [ChatMessage("user", "Name three colours of the rainbow.")]


@pytest.fixture(scope="module")
def backend(smollm2_safetensors: Path) -> Iterator[TransformersBackend]:
    engine = TransformersBackend(smollm2_safetensors, n_ctx=2048)
    yield engine
    engine.close()


def run(pieces: Iterator) -> tuple[str, str]:
    """(text, finish_reason) of a generation."""
    text, finish = [], None
    for piece in pieces:
        text.append(piece.text)
        finish = piece.finish_reason or finish
    return "".join(text), finish or ""


def greedy(max_tokens: int = 16, **extra: object) -> GenerationParams:
    return GenerationParams(max_tokens=max_tokens, temperature=0.0, **extra)  # type: ignore[arg-type]


def test_greedy_is_deterministic_and_counts_are_exact(backend: TransformersBackend) -> None:
    first, second = Counts(), Counts()
    a, finish = run(backend.chat(QUESTION, greedy(), first, threading.Event()))
    b, _ = run(backend.chat(QUESTION, greedy(), second, threading.Event()))
    assert a == b and a.strip()
    prompt = backend.chat_prompt(QUESTION)
    assert first.prompt_tokens == len(backend.tokenizer.encode(prompt, add_special_tokens=False))
    assert first == second
    assert 0 < first.completion_tokens <= 16
    assert finish == "length" or first.completion_tokens < 16


def test_completion_counts_every_generated_token(backend: TransformersBackend) -> None:
    counts = Counts()
    prompt = "The capital of France is Paris. The capital of Germany is"
    text, finish = run(backend.complete(prompt, greedy(7), counts, threading.Event()))
    assert counts.prompt_tokens == len(backend.tokenizer.encode(prompt, add_special_tokens=True))
    assert counts.completion_tokens == 7 and finish == "length"
    assert "Berlin" in text
    assert backend.count_tokens(prompt) == len(backend.tokenizer.encode(prompt, add_special_tokens=False))


def test_seeded_sampling_repeats(backend: TransformersBackend) -> None:
    params = GenerationParams(max_tokens=16, temperature=1.0, top_k=50, top_p=0.95, seed=1234)
    a, _ = run(backend.chat(QUESTION, params, Counts(), threading.Event()))
    b, _ = run(backend.chat(QUESTION, params, Counts(), threading.Event()))
    assert a == b


def test_stop_strings_never_appear(backend: TransformersBackend) -> None:
    full, _ = run(backend.chat(QUESTION, greedy(24), Counts(), threading.Event()))
    words = full.split()
    assert len(words) > 4, full
    stop = words[3]
    counts = Counts()
    cut, finish = run(backend.chat(QUESTION, greedy(24, stop=[stop]), counts, threading.Event()))
    assert stop not in cut
    assert finish == "stop"
    assert full.startswith(cut)
    assert counts.completion_tokens < 24


def test_cancel_stops_within_one_token(backend: TransformersBackend) -> None:
    cancel = threading.Event()
    counts = Counts()
    pieces = []
    at_cancel = 0
    for piece in backend.chat(QUESTION, greedy(200), counts, cancel):
        pieces.append(piece)
        if piece.text and not cancel.is_set():
            cancel.set()
            at_cancel = counts.completion_tokens
    assert pieces[-1].finish_reason == "cancelled"
    assert counts.completion_tokens <= at_cancel + 1


def test_prompt_longer_than_the_context_is_refused(
    smollm2_safetensors: Path, backend: TransformersBackend
) -> None:
    small = TransformersBackend(smollm2_safetensors, n_ctx=16)
    try:
        assert small.context_length == 16
        with pytest.raises(ContextTooLong):
            small.complete("word " * 40, greedy(4), Counts(), threading.Event())
        with pytest.raises(ContextTooLong):
            small.embed(["word " * 40])
    finally:
        small.close()


def test_generation_stops_at_the_end_of_the_context(smollm2_safetensors: Path) -> None:
    small = TransformersBackend(smollm2_safetensors, n_ctx=24)
    try:
        counts = Counts()
        prompt = "One, two, three, four, five,"
        _, finish = run(small.complete(prompt, GenerationParams(temperature=0.0), counts, threading.Event()))
        assert counts.prompt_tokens + counts.completion_tokens <= 24
        assert finish in ("length", "stop")
    finally:
        small.close()


def test_embeddings_are_normalised_mean_pooled_vectors(backend: TransformersBackend) -> None:
    texts = ["a cat sat on the mat", "a kitten sat on the rug", "quarterly tax filing deadlines"]
    result = backend.embed(texts)
    width = backend.model.config.hidden_size
    assert [len(v) for v in result.vectors] == [width] * 3
    for vector in result.vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)
    assert result.prompt_tokens == sum(len(backend.tokenizer.encode(t)) for t in texts)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    cat, kitten, tax = result.vectors
    assert cosine(cat, kitten) > cosine(cat, tax)


def test_envfile_template_and_system_shape_the_prompt(smollm2_safetensors: Path) -> None:
    template = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    engine = TransformersBackend(smollm2_safetensors, n_ctx=512, template=template, system="Be brief.")
    try:
        prompt = engine.chat_prompt(QUESTION)
        assert prompt == (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
            "Name three colours of the rainbow.<|im_end|>\n<|im_start|>assistant\n"
        )
        # The model's own chat template renders the same conversation identically.
        engine.template = None
        assert engine.chat_prompt(QUESTION) == prompt
        text, _ = run(engine.chat(QUESTION, greedy(8), Counts(), threading.Event()))
        assert "<|im_end|>" not in text and "<|im_start|>" not in text
    finally:
        engine.close()
