"""Safetensors models through transformers, decoded token by token on the CPU.

Like the llama.cpp backend we run the decode loop ourselves (one forward pass per token with the KV
cache) instead of ``model.generate``: token counts are then exact, stop strings never leak, and a
cancelled request stops after the current token. Sampling is done here too (temperature, top-k, top-p,
min-p, penalties, a seeded ``torch.Generator``) so a seed gives the same answer on every run.

Tools render through the tokenizer's own chat template (``apply_chat_template(tools=...)``) when it
writes Hermes/Qwen ``<tool_call>`` blocks (the API layer parses them). Grammars are llama.cpp's, so a
grammar (``response_format`` or a forced ``tool_choice``) is refused here, naming the parameter.
"""

from __future__ import annotations

import gc
import inspect
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..templates import ChatTemplate, pick_template, template_message
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
    token_logprob,
)
from .registry import BackendType, LoadOptions

# Prompt positions scored per forward pass: the logits kept are SCORE_CHUNK x n_vocab, not the prompt's.
SCORE_CHUNK = 64

# Decoding one token reads every weight once, so it is bound by memory bandwidth: bfloat16 (half the
# bytes) decoded SmolLM2-135M at 18-22 tok/s against 15-16 for float32 on 2 AVX2 cores (all threads),
# and halves the memory. float32 won only single-threaded (by ~10 %). Override with IOLLM_TORCH_DTYPE.
DEFAULT_DTYPE = os.environ.get("IOLLM_TORCH_DTYPE", "bfloat16")
# End-of-turn markers that chat formats use besides the tokenizer's EOS token.
_END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


def _threads() -> int:
    """Every core this process may use (IOLLM_TORCH_THREADS overrides, e.g. on a shared machine)."""
    configured = os.environ.get("IOLLM_TORCH_THREADS")
    if configured:
        return max(1, int(configured))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class TransformersBackend:
    """One Hugging Face format model folder (config.json + safetensors + tokenizer) loaded in this process."""

    name = "transformers"

    def __init__(
        self,
        folder: Path,
        n_ctx: int = 4096,
        template: str | None = None,
        system: str | None = None,
        dtype: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a worker's log is for errors, not load bars
        self._torch = torch
        torch.set_num_threads(_threads())
        self.folder = Path(folder)
        self.dtype = dtype or DEFAULT_DTYPE
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, self.dtype))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise BackendFailure(f"transformers could not load {self.folder.name}: {exc}") from exc
        self.model.eval()
        limit = getattr(self.model.config, "max_position_embeddings", None) or n_ctx
        self.context_length = min(n_ctx, int(limit))
        self.system = system
        bos = self.tokenizer.bos_token or ""
        eos = self.tokenizer.eos_token or ""
        own = getattr(self.tokenizer, "chat_template", None)
        # The Envfile's TEMPLATE renders with iollm's renderer; the model's own through the tokenizer.
        self.template: ChatTemplate | None = pick_template(None, template, bos, eos) if template else None
        self._stops = pick_template(own, template, bos, eos).stops
        self._eos = self._eos_ids()
        accepted = inspect.signature(self.model.forward).parameters
        self._keep_logits = "logits_to_keep" in accepted
        # transformers 5 renamed ``past_key_values`` to ``cache``; older models keep the old name.
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"

    def _eos_ids(self) -> set[int]:
        """Every token id that ends a turn: config, generation config, tokenizer, chat-format markers."""
        ids: set[int] = set()
        sources = [self.model.config.eos_token_id, self.tokenizer.eos_token_id]
        generation = getattr(self.model, "generation_config", None)
        if generation is not None:
            sources.append(generation.eos_token_id)
        for value in sources:
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(v for v in value if isinstance(v, int))
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in _END_OF_TURN if t in vocab and t in self._stops)
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    # -- prompts ---------------------------------------------------------------------------------

    def chat_prompt(self, messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
        """The exact text the model sees for a conversation (tokenised without adding specials)."""
        if self.template is not None:
            return self.template.render(messages, self.system, tools)
        if self.system and not any(m.role == "system" for m in messages):
            messages = [ChatMessage("system", self.system), *messages]
        wire = [template_message(m) for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            extra = {"tools": tools} if tools else {}
            try:
                return self.tokenizer.apply_chat_template(
                    wire, add_generation_prompt=True, tokenize=False, **extra
                )
            except Exception as exc:  # a template that raises must be a clean error, not a crash
                raise BackendFailure(f"chat template failed: {exc}") from exc
        return pick_template(None, None).render(messages)

    # -- generation ------------------------------------------------------------------------------

    def chat(
        self, messages: list[ChatMessage], params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        if params.grammar is not None:
            raise Unsupported(
                "the transformers backend cannot enforce a grammar; serve a GGUF of this model for "
                "structured output",
                param=params.grammar_param,
            )
        if params.tools and self.tool_format is None:
            raise Unsupported(
                "this model's chat template does not support tools (or writes tool calls in a format "
                "this node does not parse)",
                param="tools",
            )
        prompt = self.chat_prompt(messages, params.tools)
        check_prompt_length(prompt, self.context_length)
        tokens = self.tokenizer.encode(prompt, add_special_tokens=False)
        stops = list(dict.fromkeys([*params.stop, *self._stops]))
        extra = GenerationParams(**{**params.__dict__, "stop": stops})
        return self._generate(tokens, extra, counts, cancel)

    def complete(
        self, prompt: str, params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        check_prompt_length(prompt, self.context_length)
        return self._generate(self.tokenizer.encode(prompt, add_special_tokens=True), params, counts, cancel)

    def _generate(
        self, tokens: list[int], params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        counts.prompt_tokens = len(tokens)
        room = self.context_length - len(tokens)
        if room <= 0 or not tokens:
            raise ContextTooLong(
                f"the prompt is {len(tokens)} tokens; this model's context is {self.context_length}. "
                "Shorten the messages or use a model with a longer context."
            )
        limit = room if params.max_tokens is None else min(params.max_tokens, room)
        return self._loop(tokens, params, limit, counts, cancel)

    def _forward(self, ids: list[int], past: Any) -> tuple[Any, Any]:
        torch = self._torch
        kwargs: dict[str, Any] = {"use_cache": True, self._cache_arg: past}
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=torch.tensor([ids], dtype=torch.long), **kwargs)
        cache = out.cache if self._cache_arg == "cache" else out.past_key_values
        return out.logits[0, -1, :].float(), cache

    def _score(self, tokens: list[int], top: int) -> tuple[list[TokenLogprob], Any, Any]:
        """Each prompt token's logprob given those before it (a leading BOS is context only; the first
        text token has none, as in OpenAI's API), plus the last position's logits and the KV cache."""
        torch = self._torch
        first = 1 if tokens and tokens[0] == self.tokenizer.bos_token_id else 0
        pieces = _IncrementalText(self.tokenizer)
        texts = [pieces.add(t) for t in tokens[first:]]
        if texts:
            texts[-1] += pieces.flush()
        entries = [TokenLogprob(texts[0], None, None)] if texts else []
        past, logits = None, None
        for start in range(0, len(tokens), SCORE_CHUNK):
            part = tokens[start : start + SCORE_CHUNK]
            kwargs: dict[str, Any] = {"use_cache": True, self._cache_arg: past}
            if self._keep_logits:
                kwargs["logits_to_keep"] = 0  # every position
            out = self.model(input_ids=torch.tensor([part], dtype=torch.long), **kwargs)
            past = out.cache if self._cache_arg == "cache" else out.past_key_values
            logits = out.logits[0].float()
            rows = torch.log_softmax(logits, dim=-1).double().numpy()
            for j in range(len(part)):
                target = start + j + 1  # the position whose token this row predicts
                if first < target < len(tokens):
                    entries.append(
                        token_logprob(texts[target - first], tokens[target], rows[j], top, self._name)
                    )
        return entries, logits[-1], past

    @property
    def tool_format(self) -> str | None:
        """``"hermes"`` when the template (the Envfile's, else the tokenizer's) renders tools as
        ``<tool_call>`` blocks."""
        if self.template is not None:
            return self.template.tool_format
        own = getattr(self.tokenizer, "chat_template", None)
        return pick_template(own if isinstance(own, str) else None, None).tool_format

    def _raw(self, token: int) -> bytes:
        """A token's own bytes (chat logprobs' ``bytes``)."""
        return self.tokenizer.decode([token]).encode()

    def _name(self, token: int) -> str:
        """A token's own text, as the key of ``top_logprobs``."""
        return self.tokenizer.decode([token], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _loop(
        self, tokens: list[int], params: GenerationParams, limit: int, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        matcher = StopMatcher(params.stop)
        sampler = _Sampler(self._torch, params)
        text = _IncrementalText(self.tokenizer)
        history = list(tokens)
        finish = "length"
        top = params.logprobs
        scored: list[TokenLogprob] = []  # generated tokens' entries not yet handed out with a piece
        try:
            with self._torch.inference_mode():
                if top is not None and params.prompt_logprobs:
                    entries, logits, past = self._score(tokens, top)
                    yield Piece("", logprobs=entries)
                    if limit <= 0:
                        yield Piece("", "length", logprobs=[])
                        return
                elif limit <= 0:
                    yield Piece("", "length", logprobs=None if top is None else [])
                    return
                else:
                    logits, past = self._forward(tokens, None)
                while True:
                    if cancel.is_set():
                        finish = "cancelled"
                        break
                    token = sampler.pick(logits, history)
                    if token in self._eos:
                        finish = "stop"
                        break
                    counts.completion_tokens += 1
                    history.append(token)
                    piece = text.add(token)
                    if top is not None:
                        row = self._torch.log_softmax(logits, dim=-1).double().numpy()
                        scored.append(token_logprob(piece, token, row, top, self._name, self._raw))
                    out, stopped = matcher.feed(piece)
                    if out:
                        yield Piece(out, logprobs=drain(scored, top))
                    if stopped:
                        finish = "stop"
                        break
                    if counts.completion_tokens >= limit:
                        break
                    logits, past = self._forward([token], past)
        except RuntimeError as exc:
            raise BackendFailure(f"transformers failed while generating: {exc}") from exc
        if finish != "stop":
            tail = matcher.flush() + text.flush()
            if tail:
                yield Piece(tail, logprobs=drain(scored, top))
        yield Piece("", finish, logprobs=drain(scored, top))

    # -- embeddings ------------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> Embedding:
        """Mean of the last hidden states over the tokens, L2-normalised (no pooling head needed)."""
        torch = self._torch
        for text in texts:
            check_prompt_length(text, self.context_length)
        encoded = [self.tokenizer.encode(t, add_special_tokens=True) for t in texts]
        if any(len(ids) > self.context_length for ids in encoded):
            raise ContextTooLong(
                f"an input is longer than this model's context ({self.context_length} tokens)"
            )
        body = getattr(self.model, self.model.base_model_prefix, self.model)
        vectors = []
        with torch.inference_mode():
            for ids in encoded:
                if not ids:
                    ids = [self.tokenizer.eos_token_id or 0]
                hidden = body(input_ids=torch.tensor([ids], dtype=torch.long)).last_hidden_state[0].float()
                mean = hidden.mean(dim=0)
                vectors.append((mean / mean.norm().clamp_min(1e-12)).tolist())
        return Embedding(vectors=vectors, prompt_tokens=sum(len(ids) for ids in encoded))

    def close(self) -> None:
        self.model = None
        gc.collect()


class _Sampler:
    """Picks the next token: greedy at temperature 0, else penalties, top-k, top-p, min-p, then a draw."""

    def __init__(self, torch: Any, params: GenerationParams) -> None:
        self.torch = torch
        self.params = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(int(params.seed))
        else:
            self.generator.seed()

    def pick(self, logits: Any, history: list[int]) -> int:
        torch, p = self.torch, self.params
        logits = self._penalised(logits.clone(), history)
        if p.temperature is None or p.temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        if p.top_k and 0 < p.top_k < logits.shape[-1]:
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if p.top_p is not None and p.top_p < 1:  # 0 keeps only the most likely token, as llama.cpp does
            ordered, order = torch.sort(probs, descending=True)
            before = torch.cumsum(ordered, dim=-1) - ordered
            ordered = ordered.masked_fill(before > p.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter(0, order, ordered)
        if p.min_p and p.min_p > 0:
            probs = probs.masked_fill(probs < probs.max() * p.min_p, 0.0)
        return int(torch.multinomial(probs / probs.sum(), 1, generator=self.generator))

    def _penalised(self, logits: Any, history: list[int]) -> Any:
        p = self.params
        if not history or (
            p.repeat_penalty in (None, 1.0) and not p.presence_penalty and not p.frequency_penalty
        ):
            return logits
        torch = self.torch
        ids, seen = torch.unique(torch.tensor(history, dtype=torch.long), return_counts=True)
        values = logits[ids]
        if p.repeat_penalty and p.repeat_penalty != 1.0:
            values = torch.where(values > 0, values / p.repeat_penalty, values * p.repeat_penalty)
        values = values - (p.frequency_penalty or 0.0) * seen - (p.presence_penalty or 0.0)
        logits[ids] = values
        return logits


class _IncrementalText:
    """Text of generated tokens, released only when complete (no half UTF-8 character, no split word
    that later decodes differently), using the offsets technique of text-generation-inference."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]


def load(options: LoadOptions) -> TransformersBackend:
    assert options.location is not None
    return TransformersBackend(
        options.location, n_ctx=options.context, template=options.template, system=options.system
    )


BACKEND = BackendType(
    name="transformers",
    load=load,
    suffixes=(".safetensors",),
    weights="safetensors model",
    needs=("config.json",),
    precedence=20,
)
