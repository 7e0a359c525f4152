"""The one interface every inference backend implements (llama.cpp, transformers, remote servers).

A backend turns a prompt into a stream of ``Piece``s and reports exact token counts, because usage
records are what the mining layer bills: the count must be the tokens the engine really processed.
Cancellation is cooperative: the backend checks ``cancel`` between tokens, so a client that goes away
stops the generation within one token.

Log-probabilities (OpenAI's legacy ``logprobs``/``echo``): when ``GenerationParams.logprobs`` is set, a
backend attaches a ``TokenLogprob`` to its pieces for every generated token, and with
``prompt_logprobs`` first yields one text-less piece scoring every prompt token. A backend that cannot
compute them raises ``Unsupported`` (400 naming ``logprobs``) instead of ignoring the request. For chat
logprobs a backend also fills each entry's raw ``data`` bytes and its ``ranked`` alternatives (exactly k,
duplicates kept), which OpenAI's chat shape needs and a text-keyed dict cannot hold.

Tools and grammars (``GenerationParams.tools``/``grammar``): the chat template renders the tools, the
model answers in its own tool-call text (the API layer parses it), and a grammar (llama.cpp GBNF, built
by ``runtime.structured``) constrains the tokens. A backend that cannot honour either raises
``Unsupported`` naming the request parameter they came from (``grammar_param``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...errors import IollmError, ProtocolError


class ContextTooLong(ProtocolError):
    code = "context_length_exceeded"


# No tokenizer we serve makes a token of more than this many characters on average over a prompt; a
# prompt longer than context x this bound cannot fit, so it is refused without tokenizing it all.
MAX_CHARS_PER_TOKEN = 64


def check_prompt_length(text: str, context_length: int) -> None:
    """Refuse, before tokenizing, a prompt that cannot fit in ``context_length`` tokens (0: unknown)."""
    if context_length > 0 and len(text) > context_length * MAX_CHARS_PER_TOKEN:
        raise ContextTooLong(
            f"the prompt has {len(text)} characters, more than this model's context of {context_length} "
            "tokens can hold; it was refused before tokenizing. "
            "Shorten the messages or use a model with a longer context."
        )


class Unsupported(ProtocolError):
    """The engine cannot honour a request parameter (named in ``param``); never silently ignored."""

    code = "unsupported_parameter"


class BackendFailure(IollmError):
    """The engine failed; the node stays up and answers 500."""

    code = "backend_error"
    type = "server_error"


@dataclass(frozen=True)
class ChatMessage:
    """One turn; an assistant turn may carry OpenAI ``tool_calls`` and a ``tool`` turn answers one
    (``tool_call_id``), so a tool round trip renders through the model's own template."""

    role: str
    content: str
    tool_calls: tuple[dict[str, Any], ...] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def wire(self) -> dict[str, Any]:
        """The OpenAI message dict (what templates and workers read)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [dict(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ChatMessage:
        calls = data.get("tool_calls")
        return cls(
            str(data.get("role", "user")),
            str(data.get("content") or ""),
            tuple(calls) if calls else None,
            data.get("tool_call_id"),
            data.get("name"),
        )


@dataclass
class GenerationParams:
    """Sampling settings after merging request > environment > defaults."""

    max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None: none; k >= 0: each token's logprob and the k most likely
    prompt_logprobs: bool = False  # with ``logprobs``: score the prompt tokens too (``echo``)
    tools: list[dict[str, Any]] | None = None  # OpenAI tool definitions, rendered by the chat template
    grammar: str | None = None  # GBNF the answer must match (runtime.structured)
    grammar_param: str = "response_format"  # the request parameter the grammar came from, for errors

    def cache_key(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "seed": self.seed,
            "stop": list(self.stop),
            "grammar": self.grammar,
        }


@dataclass
class TokenLogprob:
    """One token: its text, its log-probability given the tokens before it, and the most likely tokens
    at its position (the token itself included). The texts of consecutive tokens concatenate to the
    text they make (a character split over tokens belongs to the token that completes it)."""

    token: str
    logprob: float | None  # None for the first prompt token: nothing comes before it
    top: dict[str, float] | None
    data: bytes | None = None  # the token's own bytes (chat logprobs' ``bytes``)
    ranked: list[tuple[str, float, bytes]] | None = None  # the k best, best first (chat ``top_logprobs``)


def logprobs_json(entries: list[TokenLogprob], offset: int = 0) -> dict[str, list[Any]]:
    """OpenAI's completion ``logprobs`` object; ``text_offset`` counts characters from ``offset``."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [e.top for e in entries],
        "text_offset": offsets,
    }


def logprobs_wire(entries: list[TokenLogprob]) -> dict[str, list[Any]]:
    """``logprobs_json`` plus each entry's bytes and ranked alternatives: how a worker sends them."""
    out = logprobs_json(entries)
    if any(e.data is not None for e in entries):
        out["token_bytes"] = [None if e.data is None else list(e.data) for e in entries]
        out["ranked"] = [
            None if e.ranked is None else [[t, lp, list(b)] for t, lp, b in e.ranked] for e in entries
        ]
    return out


def logprobs_from_json(data: dict[str, Any]) -> list[TokenLogprob]:
    """The entries of an OpenAI completion ``logprobs`` object (how a worker sends them back)."""
    tokens = data.get("tokens") or []
    raw = data.get("token_bytes") or [None] * len(tokens)
    ranked = data.get("ranked") or [None] * len(tokens)
    return [
        TokenLogprob(
            str(token),
            None if logprob is None else float(logprob),
            top,
            None if chunk is None else bytes(chunk),
            None if best is None else [(str(t), float(lp), bytes(b)) for t, lp, b in best],
        )
        for token, logprob, top, chunk, best in zip(
            tokens,
            data.get("token_logprobs") or [],
            data.get("top_logprobs") or [],
            raw,
            ranked,
            strict=True,
        )
    ]


def chat_logprobs_json(entries: list[TokenLogprob], k: int) -> dict[str, Any]:
    """OpenAI's chat ``logprobs``: ``content`` with token, logprob, bytes and exactly ``k`` (or as many
    as the vocabulary has) ``top_logprobs`` per token."""

    def raw(entry: TokenLogprob) -> list[int]:
        return list(entry.data if entry.data is not None else entry.token.encode())

    content = []
    for entry in entries:
        best = entry.ranked
        if best is None:  # an engine that only gave the text-keyed dict
            pairs = sorted((entry.top or {}).items(), key=lambda kv: -kv[1])
            best = [(t, lp, t.encode()) for t, lp in pairs]
        content.append(
            {
                "token": entry.token,
                "logprob": entry.logprob,
                "bytes": raw(entry),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)} for t, lp, b in best[:k]],
            }
        )
    return {"content": content, "refusal": None}


@dataclass
class Piece:
    """A piece of generated text. The last piece of a generation carries ``finish_reason``.

    ``logprobs`` (only when asked for) covers the tokens generated since the previous piece; a piece of
    prompt logprobs comes first and has no text."""

    text: str
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Counts:
    """Exact token counts, filled in while generating (read them after the stream ends)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Embedding:
    vectors: list[list[float]]
    prompt_tokens: int


class Backend(Protocol):
    """What the serving layer needs from an engine. Implementations must be safe to call from one
    thread at a time; the manager serialises requests to a backend instance."""

    name: str
    context_length: int

    def chat(
        self, messages: list[ChatMessage], params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]: ...

    def complete(
        self, prompt: str, params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]: ...

    def embed(self, texts: list[str]) -> Embedding: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


def log_softmax(logits: Any) -> Any:
    """Row-wise log-softmax of a numpy array, in float64 so that long sums stay exact."""
    import numpy as np

    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top_ids(row: Any, k: int) -> list[int]:
    """The ids of the ``k`` largest values of a 1-D numpy array, largest first."""
    import numpy as np

    if k <= 0:
        return []
    k = min(k, row.shape[-1])
    best = np.argpartition(-row, k - 1)[:k]
    return [int(i) for i in best[np.argsort(-row[best], kind="stable")]]


def token_logprob(
    text: str,
    token: int,
    row: Any,
    k: int,
    name: Callable[[int], str],
    raw: Callable[[int], bytes] | None = None,
) -> TokenLogprob:
    """The entry for ``token`` from a log-softmax row: its logprob and the ``k`` best (plus itself).
    With ``raw`` (a token's bytes), also its bytes and the ``k`` best as a ranked list (chat shape)."""
    best = top_ids(row, k)
    top = {name(i): float(row[i]) for i in best}
    top.setdefault(name(token), float(row[token]))
    if raw is None:
        return TokenLogprob(text, float(row[token]), top)
    ranked = [(name(i), float(row[i]), raw(i)) for i in best]
    return TokenLogprob(text, float(row[token]), top, raw(token), ranked)


def drain(scored: list[TokenLogprob], top: int | None) -> list[TokenLogprob] | None:
    """Hand out the entries gathered since the last piece (None when logprobs were not asked for)."""
    if top is None:
        return None
    out = list(scored)
    scored.clear()
    return out


class StopMatcher:
    """Holds back text that could be the start of a stop string, so a stop string is never sent.

    Returns (text safe to emit, stopped?)."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.buffer = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.buffer += text
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buffer = self.buffer[:cut], ""
            return out, True
        keep = 0
        for size in range(1, min(self.longest, len(self.buffer)) + 1):
            tail = self.buffer[-size:]
            if any(s.startswith(tail) for s in self.stops):
                keep = size
        out = self.buffer[: len(self.buffer) - keep]
        self.buffer = self.buffer[len(self.buffer) - keep :]
        return out, False

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out
