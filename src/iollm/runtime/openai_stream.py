"""OpenAI streaming: SSE chunks for /v1/chat/completions and /v1/completions, one or several choices.

With ``n > 1`` each choice is its own call (its own seed, usage record and engine turn, as in the
non-streamed answer), and the choices are streamed one after another, each chunk carrying its choice's
``index`` as vLLM does. One after another, not interleaved: every call waits for an engine slot like
any request, so interleaving would only hold n slots (or queue places) for the same total time and let
a full queue refuse a choice halfway through the stream. A choice that has not started when the client
leaves is never run, so never billed. The final usage chunk (``stream_options.include_usage``) sums the
calls, as the usage records do.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import IollmError
from .backends import TokenLogprob, chat_logprobs_json, logprobs_json
from .service import Call
from .tools import ToolCall, ToolCallParser, ToolPlan

DONE = b"data: [DONE]\n\n"


def usage_json(*calls: Call) -> dict[str, int]:
    """Usage summed over a request's calls (one per choice). Each call processed the prompt, so the
    prompt's tokens count once per choice: OpenAI counts the prompt once for ``n``, but this is what the
    engine did and what the usage records (and so billing) hold."""
    prompt = sum(call.counts.prompt_tokens for call in calls)
    completion = sum(call.counts.completion_tokens for call in calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def error_event(exc: BaseException) -> bytes:
    if isinstance(exc, IollmError):
        return sse({"error": {**exc.to_json()["error"], "param": exc.details.get("param")}})
    return sse(
        {"error": {"message": f"internal error: {exc}", "type": "server_error", "param": None, "code": None}}
    )


async def first_then_rest(pieces: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Start the generation before the response (so a bad model is a 4xx, not a broken stream)."""
    iterator = pieces.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = None

    async def rest() -> AsyncIterator[Any]:
        if first is not None:
            yield first
        async for item in iterator:
            yield item

    return rest()


class Stream:
    """What every chunk of one streamed response shares: its id (the first call's usage record's),
    object, creation time and model name."""

    def __init__(self, call: Call, obj: str, model: str) -> None:
        prefix = "chatcmpl-" if obj == "chat.completion.chunk" else "cmpl-"
        self.ident = prefix + call.record.id
        self.obj = obj
        self.model = model
        self.created = int(time.time())

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(
            {
                "id": self.ident,
                "object": self.obj,
                "created": self.created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
        )


# One choice's chunks: (its pieces, its call, its index, the response it belongs to) -> SSE events.
Choice = Callable[[AsyncIterator[Any], Call, int, Stream], AsyncIterator[bytes]]


async def stream_choices(
    first: Call,
    pieces: AsyncIterator[Any],
    later: list[Callable[[], Call]],
    choice: Choice,
    obj: str,
    model: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """SSE events for all choices: the first call (already started, so its load errors were HTTP
    errors), then each of ``later`` started when the one before it has ended; the usage chunk; [DONE]."""
    stream = Stream(first, obj, model)
    calls = [first]
    try:
        async for event in choice(pieces, first, 0, stream):
            yield event
        for index, start in enumerate(later, 1):
            calls.append(start())
            async for event in choice(calls[-1], calls[-1], index, stream):
                yield event
        if include_usage:
            yield stream.event([], usage=usage_json(*calls))
    except Exception as exc:  # mid-stream errors are SSE data lines, which the OpenAI client raises
        yield error_event(exc)
    yield DONE


def completion_choice(echo: str = "", offset: int | None = None) -> Choice:
    """One /v1/completions choice: ``echo`` is sent before its first generated text; ``offset`` (when
    logprobs were asked for) is the ``text_offset`` of the first scored token."""

    async def run(pieces: AsyncIterator[Any], call: Call, index: int, stream: Stream) -> AsyncIterator[bytes]:
        pending, at = echo, offset

        def chunk(text: str, finish: str | None, logprobs: dict[str, Any] | None = None) -> bytes:
            choice = {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}
            return stream.event([choice])

        async for piece in pieces:
            text, pending = pending + piece.text, ""
            scored = None
            if at is not None and piece.logprobs:
                scored = logprobs_json(piece.logprobs, at)
                at += sum(len(entry.token) for entry in piece.logprobs)
            if text or scored:
                yield chunk(text, None, scored)
            if piece.finish_reason and piece.finish_reason != "cancelled":
                yield chunk("", piece.finish_reason)

    return run


def chat_choice(plan: ToolPlan, top: int | None) -> Choice:
    """One chat choice: content deltas, each tool call as OpenAI streams it (its id and name, then its
    arguments, under its ``index``), and logprobs with the delta they belong to."""

    async def run(pieces: AsyncIterator[Any], call: Call, index: int, stream: Stream) -> AsyncIterator[bytes]:
        parser = ToolCallParser(plan) if plan.active else None
        waiting: list[TokenLogprob] = []  # logprobs of text the parser still holds
        started = False

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, scored: bool = True) -> bytes:
            logprobs = None
            if top is not None and scored and waiting:
                logprobs = chat_logprobs_json(waiting, top)
                waiting.clear()
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}
            return stream.event([choice])

        def deltas(events: list[Any]) -> list[bytes]:
            out = []
            for event in events:
                if isinstance(event, ToolCall):
                    at = len([c for c in parser.calls if c is not event]) if parser else 0
                    head = {
                        "index": at,
                        "id": event.id,
                        "type": "function",
                        "function": {"name": event.name, "arguments": ""},
                    }
                    out.append(chunk({"tool_calls": [head]}, scored=False))
                    out.append(
                        chunk({"tool_calls": [{"index": at, "function": {"arguments": event.arguments}}]})
                    )
                elif event:
                    out.append(chunk({"content": event}))
            return out

        async for piece in pieces:
            if not started:
                started = True
                yield chunk({"role": "assistant", "content": ""}, scored=False)
            if top is not None:
                waiting.extend(piece.logprobs or ())
            events = parser.feed(piece.text) if parser else [piece.text]
            if piece.finish_reason and parser:
                events += parser.flush()
            for event in deltas(events):
                yield event
            if piece.finish_reason and piece.finish_reason != "cancelled":
                reason = "tool_calls" if parser and parser.calls else piece.finish_reason
                yield chunk({}, reason)

    return run
