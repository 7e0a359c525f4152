"""OpenAI's Responses API (``POST /v1/responses``) on the same models, for clients on its default path
(``client.responses.create``).

A request is translated into a chat request and run by the chat route's own checks and calls
(``openai_api.prepare_chat``), so tools, structured output, sampling and metering behave the same:
``input`` (a string or a list of message, ``function_call`` and ``function_call_output`` items) becomes
the messages, ``instructions`` a system message, flat function ``tools`` and ``tool_choice`` the chat
forms, ``text.format`` the ``response_format``, ``max_output_tokens`` the completion limit. The answer is
a ``response`` object whose output is a message and/or ``function_call`` items; streamed, the events are
``response.created`` ... ``response.completed`` as the SDK's stream helper expects them.

Nothing is stored: ``store: true``, ``previous_response_id``, ``conversation`` and ``background`` are
refused by name, as is any field this node does not implement.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from ..errors import IollmError, NotFound, ProtocolError
from ..hub import Identity
from ..hub.deps import caller
from .openai_api import (
    ChatRequest,
    ChatTurn,
    collect_scored,
    finish,
    parse,
    prepare_chat,
    refuse_unknown,
    runtime,
)
from .openai_stream import first_then_rest
from .service import Call
from .tools import split_tool_calls

router = APIRouter(prefix="/v1")

# Chat parameter names as a Responses user knows them (errors raised by the chat checks name these).
_PARAM_NAMES = {
    "messages": "input",
    "response_format": "text.format",
    "max_completion_tokens": "max_output_tokens",
}


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[Any]
    instructions: str | None = None
    stream: bool = False
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    store: bool | None = None
    truncation: str | None = None


def _refuse_unsupported(body: ResponsesRequest) -> None:
    if body.store:
        raise ProtocolError(
            "store: true is not supported: this node keeps no responses (send store: false, or leave it "
            "out, and pass the conversation in input)",
            param="store",
        )
    if body.truncation not in (None, "disabled"):
        raise ProtocolError("only truncation 'disabled' is supported", param="truncation")
    extra = body.model_extra or {}
    refuse_unknown({k: v for k, v in extra.items() if not (k == "include" and v == [])})  # as on chat


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ProtocolError(f"{where}: content must be a string or a list of text parts", param="input")
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ProtocolError(
                f"{where}: only text parts are supported by these models (got {kind!r})", param="input"
            )
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def _messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    """``instructions`` and ``input`` as chat messages; a run of function calls becomes one assistant
    message with ``tool_calls``, and each output a ``tool`` message."""
    out: list[dict[str, Any]] = []
    if body.instructions:
        out.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        return [*out, {"role": "user", "content": body.input}]
    for index, item in enumerate(body.input):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise ProtocolError(f"{where} must be an object", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise ProtocolError(f"{where}: unknown role {role!r}", param="input")
            out.append({"role": role, "content": _text_of(item.get("content"), where)})
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or ""),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
            }
            if (
                out
                and out[-1]["role"] == "assistant"
                and out[-1].get("tool_calls")
                and not out[-1]["content"]
            ):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, where)
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text})
        else:
            raise ProtocolError(f"{where}: input items of type {kind!r} are not supported", param="input")
    return out


def _tools(tools: list[Any] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise ProtocolError(f"only function tools are supported (got {kind!r})", param="tools")
        function = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    if not text:
        return None
    unknown = sorted(set(text) - {"format"})
    if unknown:
        raise ProtocolError(f"text.{unknown[0]} is not supported by this node", param=f"text.{unknown[0]}")
    shape = text.get("format") or {"type": "text"}
    kind = shape.get("type") if isinstance(shape, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: shape[k] for k in ("name", "schema", "strict", "description") if k in shape}
        return {"type": "json_schema", "json_schema": schema}
    raise ProtocolError(f"unknown text.format type {kind!r}", param="text.format")


def as_chat(body: ResponsesRequest) -> ChatRequest:
    """The chat request that runs this Responses request."""
    _refuse_unsupported(body)
    chat: dict[str, Any] = {
        "model": body.model,
        "messages": _messages(body),
        "stream": body.stream,
        "max_completion_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "tools": _tools(body.tools),
        "tool_choice": _tool_choice(body.tool_choice),
        "parallel_tool_calls": body.parallel_tool_calls,
        "response_format": _response_format(body.text),
    }
    return ChatRequest.model_validate({k: v for k, v in chat.items() if v is not None})


def _renamed(exc: ProtocolError) -> ProtocolError:
    """The chat check's error with the parameter called as the Responses request calls it."""
    param = exc.details.get("param")
    if param not in _PARAM_NAMES:
        return exc
    message = exc.message.replace(repr(param), repr(_PARAM_NAMES[param])).replace(param, _PARAM_NAMES[param])
    return ProtocolError(message, **{**exc.details, "param": _PARAM_NAMES[param]})


class ResponseShape:
    """What the events and the final object of one response share: ids, the request's settings."""

    def __init__(self, call: Call, body: ResponsesRequest) -> None:
        self.id = "resp_" + call.record.id
        self.message_id = "msg_" + call.record.id
        self.created = int(time.time())
        self.body = body

    def response(self, status: str, output: list[dict[str, Any]], call: Call | None = None) -> dict[str, Any]:
        body = self.body
        incomplete = None
        if call is not None and finish(call) == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        usage = None
        if call is not None:
            prompt, completion = call.counts.prompt_tokens, call.counts.completion_tokens
            usage = {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + completion,
            }
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": body.model,
            "output": output,
            "parallel_tool_calls": body.parallel_tool_calls if body.parallel_tool_calls is not None else True,
            "previous_response_id": None,
            "store": False,
            "temperature": body.temperature,
            "text": body.text or {"format": {"type": "text"}},
            "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
            "tools": body.tools or [],
            "top_p": body.top_p,
            "truncation": "disabled",
            "usage": usage,
            "metadata": (body.model_extra or {}).get("metadata") or {},
        }

    def message(self, text: str, status: str = "completed") -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content if status == "completed" else [],
        }

    def output(self, text: str, turn: ChatTurn) -> list[dict[str, Any]]:
        """The answer's output items: its text as a message (when there is any), then its tool calls."""
        calls = []
        if turn.plan.active:
            text, calls = split_tool_calls(text, turn.plan)
        items = [self.message(text)] if text or not calls else []
        for index, call in enumerate(calls):
            items.append(
                {
                    "id": f"fc_{self.id.removeprefix('resp_')}_{index}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
        return items


def _event(kind: str, sequence: int, **fields: Any) -> bytes:
    data = {"type": kind, "sequence_number": sequence, **fields}
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_response(
    shape: ResponseShape, call: Call, pieces: AsyncIterator[Any], turn: ChatTurn
) -> AsyncIterator[bytes]:
    """The Responses event sequence. Text streams as it comes; with tools the answer is parsed whole
    (a tool call is only known once its text is complete), so its items follow the generation."""
    seq = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal seq
        seq += 1
        return _event(kind, seq - 1, **fields)

    yield event("response.created", response=shape.response("in_progress", []))
    yield event("response.in_progress", response=shape.response("in_progress", []))
    text: list[str] = []
    live = not turn.plan.active
    ids = {"item_id": shape.message_id, "output_index": 0, "content_index": 0}
    try:
        if live:
            yield event("response.output_item.added", output_index=0, item=shape.message("", "in_progress"))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield event("response.content_part.added", **ids, part=part)
        async for piece in pieces:
            text.append(piece.text)
            if live and piece.text:
                yield event("response.output_text.delta", **ids, delta=piece.text, logprobs=[])
    except IollmError as exc:  # the stream has begun: the error is an event, as OpenAI sends it
        yield event("error", code=exc.code, message=exc.message, param=exc.details.get("param"))
        return
    whole = "".join(text)
    items = shape.output(whole, turn)
    for index, item in enumerate(items):
        if live:
            yield event("response.output_text.done", **ids, text=whole, logprobs=[])
            yield event("response.content_part.done", **ids, part=item["content"][0])
        elif item["type"] == "message":  # text before a tool call: known only now, sent whole
            at = {"item_id": item["id"], "output_index": index, "content_index": 0}
            done = item["content"][0]
            yield event("response.output_item.added", output_index=index, item=dict(item, content=[]))
            yield event("response.content_part.added", **at, part=dict(done, text=""))
            yield event("response.output_text.delta", **at, delta=done["text"], logprobs=[])
            yield event("response.output_text.done", **at, text=done["text"], logprobs=[])
            yield event("response.content_part.done", **at, part=done)
        else:
            at = {"item_id": item["id"], "output_index": index}
            started = dict(item, arguments="", status="in_progress")
            yield event("response.output_item.added", output_index=index, item=started)
            yield event("response.function_call_arguments.delta", **at, delta=item["arguments"])
            yield event(
                "response.function_call_arguments.done", **at, name=item["name"], arguments=item["arguments"]
            )
        yield event("response.output_item.done", output_index=index, item=item)
    final = shape.response("completed", items, call)
    yield event(f"response.{final['status']}", response=final)


@router.post("/responses")
async def responses(request: Request, who: Identity = Depends(caller)):
    body: ResponsesRequest = await parse(request, ResponsesRequest)
    try:
        turn = prepare_chat(runtime(request), who, as_chat(body))
    except ProtocolError as exc:
        raise _renamed(exc) from None
    call = turn.start(turn.each[0])
    shape = ResponseShape(call, body)
    if body.stream:
        pieces = await first_then_rest(call)
        return StreamingResponse(
            stream_response(shape, call, pieces, turn),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    text, _ = await collect_scored(call)
    return JSONResponse(shape.response("completed", shape.output(text, turn), call))


@router.api_route("/responses/{rest:path}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
async def stored_responses(rest: str) -> JSONResponse:
    raise NotFound(
        f"/v1/responses/{rest} is not served: this node keeps no responses (store is not supported)"
    )
