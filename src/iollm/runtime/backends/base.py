"""The one interface every inference backend implements (llama.cpp, transformers, remote servers).

A backend turns a prompt into a stream of ``Piece``s and reports exact token counts, because usage
records are what the mining layer bills: the count must be the tokens the engine really processed.
Cancellation is cooperative: the backend checks ``cancel`` between tokens, so a client that goes away
stops the generation within one token.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...protocol import IollmError, ProtocolError


class ContextTooLong(ProtocolError):
    code = "context_length_exceeded"


class BackendFailure(IollmError):
    """The engine failed; the node stays up and answers 500."""

    code = "backend_error"
    type = "server_error"


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


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
        }


@dataclass
class Piece:
    """A piece of generated text. The last piece of a generation carries ``finish_reason``."""

    text: str
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"


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
