"""GGUF models through llama-cpp-python, driven token by token.

We run the sampling loop ourselves (``Llama.generate``) instead of ``create_completion`` so that token
counts are exact (streamed chunks are not tokens), stop strings never leak, and a cancelled request
stops after the current token.

Log-probabilities without ``logits_all`` (which would keep n_ctx x n_vocab floats for every model): a
generated token's come from the logits its sampler just read; a prompt's from a scoring pass that
decodes the prompt in chunks of ``SCORE_CHUNK`` positions with logits for every position, reduces each
chunk to the numbers asked for, and leaves the prompt in the KV cache for the generation that follows.

Tools render through the model's template (a template that cannot render them refuses ``tools``);
a grammar (``GenerationParams.grammar``, GBNF) joins the sampler chain and so constrains every token.

Seeds: ``Llama.generate`` reuses the KV cache of the longest common prefix with the previous call and
decodes only the rest; the last prompt position's logits then come from a batch of another shape (one
token after an identical prompt), and differ in their last bits, which is enough for a seeded sample to
differ. A seeded call therefore decodes its whole prompt from an empty cache, so the same request with
the same seed gives the same answer whatever ran before (measured: ~0.1 s more for a 40-token prompt on
Qwen2.5-0.5B, one thread). Unseeded calls keep the prefix reuse.
"""

from __future__ import annotations

import codecs
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..templates import ChatTemplate, TemplateError, pick_template
from .base import (
    BackendFailure,
    ChatMessage,
    ContextTooLong,
    Counts,
    Embedding,
    GenerationParams,
    Piece,
    StopMatcher,
    TokenLogprob,
    Unsupported,
    check_prompt_length,
    drain,
    log_softmax,
    token_logprob,
)
from .registry import BackendType, LoadOptions

# Positions whose logits one scoring pass asks for: llama.cpp keeps SCORE_CHUNK x n_vocab floats
# (12 MB for SmolLM2, 39 MB for a 152k vocabulary) instead of n_ctx x n_vocab.
SCORE_CHUNK = 64


def _threads() -> int:
    """CPU threads per engine: ``IOLLM_NUM_THREAD``, else one per core up to 8.

    On a machine that is busy with other work, fewer threads than cores is much faster: llama.cpp's
    threads wait for each other at every step of the graph, and one that is descheduled stalls all.
    """
    configured = os.environ.get("IOLLM_NUM_THREAD", "").strip()
    if configured:
        return max(1, int(configured))
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
        # The last scored prompt and its entries: the options of a multiple-choice question share their
        # context, so the next scoring decodes only from where the prompts differ.
        self._scored: tuple[list[int], int, list[TokenLogprob]] = ([], -1, [])

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
        if params.tools and self.template.tool_format is None:
            raise Unsupported(
                "this model's chat template does not support tools (or writes tool calls in a format "
                "this node does not parse)",
                param="tools",
            )
        try:
            prompt = self.template.render(messages, self.system, params.tools)
        except TemplateError as exc:
            raise Unsupported(f"the chat template failed: {exc}", param="messages") from exc
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
        check_prompt_length(prompt, self.context_length)
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
            self.llm.n_tokens = 0  # decode the whole prompt: the same logits whatever ran before
            self._scored = ([], -1, [])
        return self._loop(tokens, params, limit, counts, cancel, prompt, special)

    def _loop(
        self,
        tokens: list[int],
        params: GenerationParams,
        limit: int,
        counts: Counts,
        cancel: threading.Event,
        prompt: str,
        special: bool = False,
    ) -> Iterator[Piece]:
        """Generate; ``special`` (chat) keeps the text of special tokens such as Qwen's ``<tool_call>``,
        which is how the model marks a call (end-of-generation tokens are never text)."""
        matcher = StopMatcher(params.stop)
        grammar = self._grammar(params) if params.grammar else None
        pending = b""
        previous: list[int] = list(tokens)
        finish = "length"
        top = params.logprobs
        scored: list[TokenLogprob] = []  # generated tokens' entries not yet handed out with a piece
        if top is not None and params.prompt_logprobs:
            yield Piece("", logprobs=self._score(tokens, top, prompt))
        if limit <= 0:
            yield Piece("", "length", logprobs=[] if top is not None else None)
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
                grammar=grammar,
            )
            for token in generator:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if self._llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token):
                    finish = "stop"
                    break
                counts.completion_tokens += 1
                raw = self.llm.detokenize([token], prev_tokens=previous[-8:], special=special)
                pending += raw
                previous.append(token)
                text, pending = _decode_prefix(pending)
                if top is not None:
                    entry = token_logprob(text, token, self._last_logprobs(), top, self._name, self._raw)
                    entry.data = raw  # the bytes this token added in context (a leading space included)
                    scored.append(entry)
                out, stopped = matcher.feed(text)
                if out:
                    yield Piece(out, logprobs=drain(scored, top))
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
                yield Piece(tail, logprobs=drain(scored, top))
        yield Piece("", finish, logprobs=drain(scored, top))

    # -- log-probabilities -----------------------------------------------------------------------

    def _grammar(self, params: GenerationParams) -> Any:
        """The request's GBNF as a grammar llama.cpp accepts; one it cannot parse is a 400 (llama.cpp
        would otherwise add a null sampler to the chain)."""
        llama_cpp = self._llama_cpp
        text = params.grammar or ""
        sampler = llama_cpp.llama_sampler_init_grammar(self.llm._model.vocab, text.encode(), b"root")
        if not sampler:
            raise Unsupported("the grammar built for this request does not parse", param=params.grammar_param)
        llama_cpp.llama_sampler_free(sampler)
        from llama_cpp.llama_grammar import LlamaGrammar

        return LlamaGrammar.from_string(text, verbose=False)

    def _raw(self, token: int) -> bytes:
        """A token's own bytes (chat logprobs' ``bytes``)."""
        return self.llm.detokenize([token], special=True)

    def _name(self, token: int) -> str:
        """A token's own text, as the key of ``top_logprobs``."""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def _last_logprobs(self) -> np.ndarray:
        """Log-softmax of the logits the sampler just used (the last output of the last decode)."""
        pointer = self._llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return log_softmax(np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),)))

    def _score(self, tokens: list[int], top: int, prompt: str) -> list[TokenLogprob]:
        """Each prompt token's logprob given those before it (a BOS the engine added is context only;
        the first text token has none, as in OpenAI's API). The prompt stays in the KV cache, with the
        logits of its last position current, so ``Llama.generate`` samples from it without re-decoding."""
        llama_cpp, llm = self._llama_cpp, self.llm
        ctx = llm._ctx.ctx
        first = 1 if tokens and tokens[0] == llm.token_bos() else 0
        texts = self._texts(tokens[first:], prompt)
        resume = self._reusable(tokens, top)
        entries = [
            TokenLogprob(texts[k], e.logprob, e.top)
            for k, e in enumerate(self._scored[2][: resume + 1 - first])
        ]
        if not entries and texts:
            entries = [TokenLogprob(texts[0], None, None)]
        size = max(1, min(SCORE_CHUNK, llm.n_batch))
        # Keep the KV cache of the shared prefix; decode again from its last position (its logits row
        # scores the first token that differs).
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), 0, resume, -1)
        llm.n_tokens = resume  # what the KV cache holds, for Llama.generate's prefix reuse
        llm._requires_eval = True
        self._scored = ([], -1, [])
        batch = llama_cpp.llama_batch_init(size, 0, 1)
        try:
            for start in range(resume, len(tokens), size):
                part = tokens[start : start + size]
                batch.n_tokens = len(part)
                for j, token in enumerate(part):
                    batch.token[j] = token
                    batch.pos[j] = start + j
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = 0
                    batch.logits[j] = True
                code = llama_cpp.llama_decode(ctx, batch)
                if code != 0:
                    raise BackendFailure(
                        f"llama.cpp could not score the prompt (llama_decode returned {code})"
                    )
                llm.input_ids[start : start + len(part)] = part
                llm.n_tokens = start + len(part)
                for j in range(len(part)):
                    target = start + j + 1  # the position whose token this row predicts
                    if first < target < len(tokens):
                        row = np.ctypeslib.as_array(
                            llama_cpp.llama_get_logits_ith(ctx, j), shape=(llm.n_vocab(),)
                        )
                        entries.append(
                            token_logprob(
                                texts[target - first], tokens[target], log_softmax(row), top, self._name
                            )
                        )
        finally:
            llama_cpp.llama_batch_free(batch)
        llm._requires_eval = False
        self._scored = (list(tokens), top, list(entries))
        return entries

    def _reusable(self, tokens: list[int], top: int) -> int:
        """Positions at the start of ``tokens`` whose KV cache and entries the last scoring left valid.

        The cache must still hold them (a generation may have moved on) and the last scoring must have
        scored them with the same ``top``; at least one position is always decoded again, since its
        logits row scores the next token."""
        previous, previous_top, _ = self._scored
        if previous_top != top or not previous:
            return 0
        held = self.llm.input_ids[: self.llm.n_tokens]
        limit = min(len(tokens), len(previous), len(held)) - 1
        same = 0
        while same < limit and tokens[same] == previous[same] == held[same]:
            same += 1
        return max(0, same - 1)

    def _texts(self, tokens: list[int], prompt: str) -> list[str]:
        """Each token's share of the text: a character split over tokens goes to the one completing it."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        texts = [decoder.decode(self.llm.detokenize([t])) for t in tokens]
        if texts:
            texts[-1] += decoder.decode(b"", final=True)
            if texts[0].startswith(" ") and not prompt.startswith(" "):
                texts[0] = texts[0][1:]  # SentencePiece's space prefix is not part of the prompt
        return texts

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
        for text in texts:
            check_prompt_length(text, embedder.n_ctx())
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


def load(options: LoadOptions) -> LlamaCppBackend:
    assert options.location is not None
    return LlamaCppBackend(
        options.location,
        n_ctx=options.context,
        template=options.template,
        system=options.system,
        n_batch=options.batch,
        n_threads=options.threads,
    )


BACKEND = BackendType(
    name="llama.cpp",
    load=load,
    aliases=("llamacpp", "llama_cpp", "llama-cpp", "gguf"),
    suffixes=(".gguf",),
    weights="GGUF file",
    magic=b"GGUF",
    single_file=True,
    precedence=10,  # GGUF wins when a repository has both
)
