"""GGUF models through llama-cpp-python, driven token by token.

We run the sampling loop ourselves (``Llama.generate``) instead of ``create_completion`` so that token
counts are exact (streamed chunks are not tokens), stop strings never leak, and a cancelled request
stops after the current token.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..templates import ChatTemplate, pick_template
from .base import (
    BackendFailure,
    ChatMessage,
    ContextTooLong,
    Counts,
    Embedding,
    GenerationParams,
    Piece,
    StopMatcher,
)


def _threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class LlamaCppBackend:
    """One GGUF file loaded in this process."""

    name = "llama.cpp"

    def __init__(
        self,
        model_path: Path,
        n_ctx: int = 4096,
        template: str | None = None,
        system: str | None = None,
        n_batch: int = 512,
        n_threads: int | None = None,
    ) -> None:
        import llama_cpp
        from llama_cpp import Llama

        self.model_path = model_path
        self._Llama = Llama
        self._llama_cpp = llama_cpp
        threads = n_threads or _threads()
        try:
            # n_threads_batch defaults to every core: a provider lending one CPU would then spin two
            # threads through each prompt and slow down every other engine on the machine.
            self.llm = Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise BackendFailure(f"llama.cpp could not load {model_path.name}: {exc}") from exc
        self.context_length = self.llm.n_ctx()
        meta = self.llm.metadata
        bos = self._token_text(self.llm.token_bos())
        eos = self._token_text(self.llm.token_eos())
        self.template: ChatTemplate = pick_template(meta.get("tokenizer.chat_template"), template, bos, eos)
        self.system = system
        self._embedder = None
        self._embed_lock = threading.Lock()

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    # -- generation ------------------------------------------------------------------------------

    def chat(
        self, messages: list[ChatMessage], params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        prompt = self.template.render(messages, self.system)
        stops = list(dict.fromkeys([*params.stop, *self.template.stops]))
        extra = GenerationParams(**{**params.__dict__, "stop": stops})
        return self._generate(prompt, extra, counts, cancel, special=True)

    def complete(
        self, prompt: str, params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        return self._generate(prompt, params, counts, cancel, special=False)

    def _generate(
        self, prompt: str, params: GenerationParams, counts: Counts, cancel: threading.Event, special: bool
    ) -> Iterator[Piece]:
        tokens = self.llm.tokenize(prompt.encode(), add_bos=True, special=special)
        counts.prompt_tokens = len(tokens)
        room = self.context_length - len(tokens)
        if room <= 0:
            raise ContextTooLong(
                f"the prompt is {len(tokens)} tokens; this model's context is {self.context_length}. "
                "Shorten the messages or use a model with a longer context."
            )
        limit = room if params.max_tokens is None else min(params.max_tokens, room)
        if params.seed is not None:
            self.llm.set_seed(params.seed)
        return self._loop(tokens, params, limit, counts, cancel)

    def _loop(
        self, tokens: list[int], params: GenerationParams, limit: int, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        matcher = StopMatcher(params.stop)
        pending = b""
        previous: list[int] = list(tokens)
        finish = "length"
        if limit <= 0:
            yield Piece("", "length")
            return
        try:
            generator = self.llm.generate(
                tokens,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                reset=True,
            )
            for token in generator:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if self._llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token):
                    finish = "stop"
                    break
                counts.completion_tokens += 1
                pending += self.llm.detokenize([token], prev_tokens=previous[-8:])
                previous.append(token)
                text, pending = _decode_prefix(pending)
                out, stopped = matcher.feed(text)
                if out:
                    yield Piece(out)
                if stopped:
                    finish = "stop"
                    break
                if counts.completion_tokens >= limit:
                    break
        except (ValueError, RuntimeError) as exc:
            raise BackendFailure(f"llama.cpp failed while generating: {exc}") from exc
        if finish != "stop":
            tail = matcher.flush() + pending.decode("utf-8", errors="replace")
            if tail:
                yield Piece(tail)
        yield Piece("", finish)

    # -- embeddings ------------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> Embedding:
        with self._embed_lock:
            if self._embedder is None:
                self._embedder = self._Llama(
                    model_path=str(self.model_path),
                    n_ctx=min(self.context_length, 2048),
                    embedding=True,
                    n_threads=self.llm.n_threads,
                    n_threads_batch=self.llm.n_threads,
                    verbose=False,
                )
            embedder = self._embedder
        tokens = sum(len(embedder.tokenize(t.encode(), add_bos=True)) for t in texts)
        if any(len(embedder.tokenize(t.encode(), add_bos=True)) > embedder.n_ctx() for t in texts):
            raise ContextTooLong(f"an input is longer than the embedding context ({embedder.n_ctx()} tokens)")
        vectors = [_pooled(v) for v in embedder.embed(texts)]
        return Embedding(vectors=vectors, prompt_tokens=tokens)

    def close(self) -> None:
        for engine in (self.llm, self._embedder):
            if engine is not None:
                engine.close()
        self._embedder = None


def _pooled(vector: list) -> list[float]:
    """Mean-pool per-token vectors (models without a pooling head) and L2-normalise."""
    if vector and isinstance(vector[0], list):
        width = len(vector[0])
        vector = [sum(row[i] for row in vector) / len(vector) for i in range(width)]
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [float(x) / norm for x in vector]


def _decode_prefix(data: bytes) -> tuple[str, bytes]:
    """Decode the longest valid UTF-8 prefix; keep an incomplete multi-byte tail for the next token."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), data[cut:]
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace"), b""
