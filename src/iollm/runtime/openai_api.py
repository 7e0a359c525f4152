"""OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

Responses follow OpenAI's shapes closely enough for the official client: SSE streaming ending with
``data: [DONE]``, a usage-only chunk when ``stream_options.include_usage`` is set, errors as
``{"error": {"message", "type", "param", "code"}}`` (also mid-stream, as an SSE data line). ``n`` (1..8)
choices are each their own call and usage record, streamed too (runtime.openai_stream, which holds the
SSE code).

``/v1/completions`` takes the legacy ``logprobs`` (0..5) and ``echo``: with both, ``choices[0].logprobs``
scores every prompt token (the first one's logprob is null) and then the generated ones, and
``max_tokens: 0`` scores without generating, which is how lm-evaluation-harness computes a
log-likelihood. ``text_offset`` counts characters of the returned text, which begins with the prompt
under ``echo`` and right after it otherwise (so the first offset is ``len(prompt)``).

``/v1/chat/completions`` also takes ``tools``/``tool_choice``/``parallel_tool_calls`` (runtime.tools:
the model's own tool-call text becomes ``tool_calls``, streamed as OpenAI's indexed ``delta.tool_calls``),
``response_format`` ``json_object``/``json_schema`` (runtime.structured: a grammar, so the answer parses
and validates), and ``logprobs``/``top_logprobs`` (0..20) in OpenAI's chat shape, streamed too.
A parameter this node does not implement is refused with a 400 naming it; only parameters that change
nothing about the answer (``user``, ``metadata``, ``store: false``...) are accepted and not acted on.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, StrictInt
from starlette.routing import Route

from ..errors import ProtocolError
from ..hub import Identity
from ..hub.deps import caller
from ..protocol.server import read_json_body
from .backends import ChatMessage, TokenLogprob, chat_logprobs_json, logprobs_json
from .openai_stream import chat_choice, completion_choice, first_then_rest, stream_choices, usage_json
from .sampling import check_sampling
from .service import Call, Runtime
from .structured import response_format_grammar
from .tools import ToolPlan, plan_tools, split_tool_calls

router = APIRouter(prefix="/v1")


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # checked by hand so that each refusal names its parameter
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None
    logprobs: Any = None
    top_logprobs: Any = None


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list[str]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = 16
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    echo: bool = False
    logprobs: StrictInt | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: str = "float"


async def parse(request: Request, model: type[BaseModel]) -> Any:
    """The request body as ``model``; an empty body is an error, a schema error names its field."""
    return await read_json_body(request, model, empty=b"null")


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ProtocolError("only text content parts are supported by these models", param="messages")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ProtocolError("message content must be a string or a list of text parts", param="messages")


def _tool_calls(message: dict[str, Any]) -> tuple[dict[str, Any], ...] | None:
    """An assistant message's ``tool_calls``, checked (each a function with a name and arguments)."""
    calls = message.get("tool_calls")
    if calls is None:
        return None
    if not isinstance(calls, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("function"), dict)
        and isinstance(c["function"].get("name"), str)
        and isinstance(c["function"].get("arguments", ""), str | dict)
        for c in calls
    ):
        raise ProtocolError(
            "tool_calls must be a list of {id, type: function, function: {name, arguments}}", param="messages"
        )
    return tuple(calls) or None


def chat_messages(raw: list[dict[str, Any]]) -> list[ChatMessage]:
    if not raw:
        raise ProtocolError("messages must not be empty", param="messages")
    out = []
    for message in raw:
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise ProtocolError(f"unknown message role {role!r}", param="messages")
        calls = _tool_calls(message) if role == "assistant" else None
        call_id = message.get("tool_call_id") if role == "tool" else None
        name = message.get("name")
        out.append(
            ChatMessage(
                "system" if role == "developer" else role,
                message_text(message),
                calls,
                None if call_id is None else str(call_id),
                name if isinstance(name, str) else None,
            )
        )
    return out


MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat ``top_logprobs``

# Accepted and not acted on: they change nothing about the answer (hints, labels, routing tiers).
_HARMLESS = {"user", "metadata", "safety_identifier", "prompt_cache_key"}


def refuse_unknown(extra: dict[str, Any]) -> None:
    """400 naming the first request field this node does not implement (never silently ignored)."""
    for name, value in extra.items():
        if name in _HARMLESS or value is None:
            continue
        if name == "store" and value is False:
            continue
        if name == "service_tier" and value in ("auto", "default"):
            continue
        if name == "logit_bias" and value == {}:
            continue
        raise ProtocolError(
            f"the parameter {name!r} is not supported by this node (value {json.dumps(value)[:40]})",
            param=name,
        )


def chat_logprobs(logprobs: Any, top: Any) -> int | None:
    """``logprobs``/``top_logprobs`` of a chat request as the number of alternatives per token (None:
    no logprobs)."""
    if logprobs is not None and not isinstance(logprobs, bool):
        raise ProtocolError("logprobs must be true or false", param="logprobs")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise ProtocolError(
                f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}", param="top_logprobs"
            )
        if not logprobs:
            raise ProtocolError("top_logprobs needs logprobs: true", param="top_logprobs")
    return (top or 0) if logprobs else None


MAX_LOGPROBS = 5  # OpenAI's limit for the legacy completions API


_SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "seed",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "n",
)


def sampling(body: BaseModel, score_only: bool = False) -> dict[str, Any]:
    """Sampling fields of a request, checked (runtime.sampling) before any model is looked up;
    ``score_only`` allows a limit of 0 (completions with echo: score the prompt, generate nothing)."""
    fields = check_sampling({name: getattr(body, name, None) for name in _SAMPLING_FIELDS})
    name = "max_completion_tokens" if fields["max_completion_tokens"] is not None else "max_tokens"
    limit = fields[name]
    if limit is not None and limit < 1 and not score_only:
        raise ProtocolError(
            f"invalid {name!r}: it must be at least 1 (0 is allowed only on /v1/completions with "
            "echo=true, to score the prompt)",
            param=name,
        )
    fields["max_tokens"] = limit
    del fields["max_completion_tokens"]
    return fields


def choices_wanted(wanted: dict[str, Any]) -> list[dict[str, Any]]:
    """Pop ``n`` (checked by runtime.sampling: 1 to 8) from ``wanted``; the sampling values of each
    choice. Each choice is its own call, so with a ``seed`` choice i uses seed+i (wrapped into the
    64-bit range): the choices can differ, yet the same request gives the same choices again, streamed
    or not (runtime.openai_stream streams them one after another)."""
    n = wanted.pop("n", None) or 1
    seed = wanted.get("seed")
    out = []
    for i in range(n):
        params = dict(wanted)
        if seed is not None and i:
            params["seed"] = seed + i if seed + i < 2**64 else seed + i - 2**64
        out.append(params)
    return out


def finish(call: Call) -> str:
    return call.finish_reason if call.finish_reason != "cancelled" else "stop"


async def collect_scored(pieces: AsyncIterator[Any]) -> tuple[str, list[TokenLogprob]]:
    """The generated text and every logprob entry (prompt tokens first, when they were scored)."""
    text: list[str] = []
    scored: list[TokenLogprob] = []
    async for piece in pieces:
        text.append(piece.text)
        scored.extend(piece.logprobs or ())
    return "".join(text), scored


def check_logprobs(value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_LOGPROBS:
        raise ProtocolError(
            f"logprobs must be an integer from 0 to {MAX_LOGPROBS} (got {value})", param="logprobs"
        )


@router.get("/models")
def list_models(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    hub = request.app.state.hub
    repos = hub.list_repos(who, "model")
    data = [
        {"id": r.repo_id, "object": "model", "created": _epoch(r.created_at), "owned_by": r.namespace}
        for r in repos
        if r.namespace != "path" and hub.refs(r)["branches"]
    ]
    for handler in runtime(request).virtual_models.values():
        data.extend(handler.list_models(who))
    return {"object": "list", "data": data}


@router.get("/models/{namespace}/{name}")
def get_model(namespace: str, name: str, request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    spec = request.app.state.runtime.resolver.resolve(who, f"{namespace}/{name}")
    return {
        "id": spec.model_id,
        "object": "model",
        "created": 0,
        "owned_by": namespace,
        "root": spec.commit,
        # the same weights and settings under any commit: what a cache of this model's answers keys on
        "content_digest": spec.content_digest,
    }


def _epoch(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


@dataclass
class ChatTurn:
    """A checked chat request, ready to run: ``start(params)`` begins one call (one choice) with the
    sampling values of one of ``each``. Shared by /v1/chat/completions and /v1/responses."""

    spec: Any
    each: list[dict[str, Any]]
    plan: ToolPlan
    top: int | None
    start: Callable[[dict[str, Any]], Call]


def prepare_chat(rt: Runtime, who: Identity, body: ChatRequest) -> ChatTurn:
    """Every check of a chat request, in the order that names the first error best: unknown fields,
    logprobs, tools, format and sampling before the model is looked up (a bad value is a 400 whatever
    the model), the model (404) before the messages."""
    refuse_unknown(body.model_extra or {})
    top = chat_logprobs(body.logprobs, body.top_logprobs)
    plan = plan_tools(body.tools, body.tool_choice, body.parallel_tool_calls)
    shape = response_format_grammar(body.response_format)
    if shape is not None and plan.active:
        raise ProtocolError(
            "response_format cannot be combined with tools here: the format's grammar would forbid calls",
            param="response_format",
        )
    each = choices_wanted(sampling(body))
    spec = rt.resolve(who, body.model)
    messages = chat_messages(body.messages)

    def start(params: dict[str, Any]) -> Call:
        return rt.chat(
            who,
            spec,
            messages,
            params,
            body.stream,
            logprobs=top,
            tools=plan.tools,
            grammar=plan.grammar or shape,
            grammar_param="tool_choice" if plan.grammar else "response_format",
        )

    return ChatTurn(spec, each, plan, top, start)


@router.post("/chat/completions")
async def chat_completions(request: Request, who: Identity = Depends(caller)):
    body: ChatRequest = await parse(request, ChatRequest)
    turn = prepare_chat(runtime(request), who, body)
    if body.stream:
        call = turn.start(turn.each[0])
        pieces = await first_then_rest(call)
        include = bool((body.stream_options or {}).get("include_usage"))
        later = [partial(turn.start, params) for params in turn.each[1:]]
        events = stream_choices(
            call,
            pieces,
            later,
            chat_choice(turn.plan, turn.top),
            "chat.completion.chunk",
            body.model,
            include,
        )
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    # n > 1: one call per choice, one after another (each waits for an engine slot like any request,
    # and none can be refused for a full queue halfway); each writes its own usage record
    calls, results = [], []
    for params in turn.each:
        calls.append(turn.start(params))
        results.append(await collect_scored(calls[-1]))
    return JSONResponse(chat_json(body.model, turn.spec, calls, results, turn.plan, turn.top))


def chat_json(
    model: str,
    spec: Any,
    calls: list[Call],
    results: list[tuple[str, list[TokenLogprob]]],
    plan: ToolPlan | None = None,
    top: int | None = None,
) -> dict[str, Any]:
    """A chat.completion with one choice per call; its id is the first call's usage record's."""
    choices = []
    for index, (call, (text, scored)) in enumerate(zip(calls, results, strict=True)):
        message: dict[str, Any] = {"role": "assistant", "content": text}
        reason = finish(call)
        if plan is not None and plan.active:
            content, tool_calls = split_tool_calls(text, plan)
            message["content"] = content
            if tool_calls:
                message["tool_calls"] = [c.json() for c in tool_calls]
                reason = "tool_calls"
        choices.append(
            {
                "index": index,
                "message": message,
                "finish_reason": reason,
                "logprobs": None if top is None else chat_logprobs_json(scored, top),
            }
        )
    return {
        "id": "chatcmpl-" + calls[0].record.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": (spec.base_commit or spec.commit)[:12],
        "choices": choices,
        "usage": usage_json(*calls),
    }


@router.post("/completions")
async def completions(request: Request, who: Identity = Depends(caller)):
    body: CompletionRequest = await parse(request, CompletionRequest)
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise ProtocolError("send one prompt per request", param="prompt")
        prompt = prompt[0]
    extra = dict(body.model_extra or {})
    best_of = extra.pop("best_of", None)
    if best_of is not None and best_of != 1:
        raise ProtocolError("best_of is not supported; use n to get several choices", param="best_of")
    refuse_unknown(extra)
    check_logprobs(body.logprobs)
    wanted = sampling(body, score_only=body.echo)  # a bad value is refused before the model is looked up
    each = choices_wanted(wanted)
    rt = runtime(request)
    spec = rt.resolve(who, body.model) if len(each) > 1 else body.model

    def start(params: dict[str, Any]) -> Call:
        return rt.complete(
            who,
            spec,
            prompt,
            params,
            body.stream,
            logprobs=body.logprobs,
            prompt_logprobs=body.echo and body.logprobs is not None,
        )

    # text_offset counts from the start of the returned text: the prompt under echo, else what follows it
    offset = None if body.logprobs is None else (0 if body.echo else len(prompt))
    if body.stream:
        call = start(each[0])
        pieces = await first_then_rest(call)
        include = bool((body.stream_options or {}).get("include_usage"))
        later = [partial(start, params) for params in each[1:]]
        choice = completion_choice(prompt if body.echo else "", offset)
        events = stream_choices(call, pieces, later, choice, "text_completion", body.model, include)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    # one call per choice, one after another, as on the chat route
    calls, results = [], []
    for params in each:
        calls.append(start(params))
        results.append(await collect_scored(calls[-1]))
    return JSONResponse(completion_json(body.model, prompt, body.echo, offset, calls, results))


def _without_injection(handler: Any) -> Any:
    async def endpoint(request: Request) -> Any:
        return await handler(request, await caller(request))

    return endpoint


def hot_routes() -> list[Route]:
    """The inference routes as plain Starlette routes running the same handlers, for the node to put
    first: a call then skips FastAPI's dependency solving and the scan of the node's other routes (about
    a fifth of the node's own time on a one-token completion). The FastAPI routes above stay for the
    OpenAPI schema; errors go through the app's exception handlers either way."""
    return [
        Route("/v1/chat/completions", _without_injection(chat_completions), methods=["POST"]),
        Route("/v1/completions", _without_injection(completions), methods=["POST"]),
    ]


def completion_json(
    model: str,
    prompt: str,
    echo: bool,
    offset: int | None,
    calls: list[Call],
    results: list[tuple[str, list[TokenLogprob]]],
) -> dict[str, Any]:
    """A text_completion with one choice per call; its id is the first call's usage record's."""
    return {
        "id": "cmpl-" + calls[0].record.id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "text": (prompt + text) if echo else text,
                "finish_reason": finish(call),
                "logprobs": None if offset is None else logprobs_json(scored, offset),
            }
            for index, (call, (text, scored)) in enumerate(zip(calls, results, strict=True))
        ],
        "usage": usage_json(*calls),
    }


@router.post("/embeddings")
async def embeddings(request: Request, who: Identity = Depends(caller)) -> JSONResponse:
    body: EmbeddingRequest = await parse(request, EmbeddingRequest)
    refuse_unknown(body.model_extra or {})  # ``dimensions`` among them: the models' size is fixed
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ProtocolError("input must be a string or a non-empty list of strings", param="input")
    if body.encoding_format not in ("float", "base64"):
        raise ProtocolError("encoding_format must be float or base64", param="encoding_format")
    rt = runtime(request)
    spec = rt.resolve(who, body.model)
    result = await rt.embed(who, spec, texts)  # type: ignore[arg-type]

    def encode(vector: list[float]) -> list[float] | str:
        if body.encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return vector

    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v)}
                for i, v in enumerate(result.vectors)
            ],
            "model": body.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )
