"""Inference engines behind one interface (see ``base.Backend``)."""

from .base import (
    Backend,
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
    chat_logprobs_json,
    logprobs_from_json,
    logprobs_json,
    logprobs_wire,
)

__all__ = [
    "Backend",
    "BackendFailure",
    "ChatMessage",
    "ContextTooLong",
    "Counts",
    "Embedding",
    "GenerationParams",
    "Piece",
    "StopMatcher",
    "TokenLogprob",
    "Unsupported",
    "chat_logprobs_json",
    "logprobs_from_json",
    "logprobs_json",
    "logprobs_wire",
]
