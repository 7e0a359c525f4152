"""Ollama-compatible API: /api/tags, /api/chat, /api/generate, /api/show (NDJSON streaming as Ollama does).

Ollama streams by default (``"stream": true`` unless the request says false), reports durations in
nanoseconds, and sends errors as ``{"error": "..."}`` (mid-stream as a final NDJSON line).

``/api/chat`` takes ``tools`` (rendered by the model's chat template; its own tool-call text becomes
``message.tool_calls`` in Ollama's shape, arguments as an object, streamed as one message chunk per
call) and tool results (``role: tool``) and assistant ``tool_calls`` in the history. ``format``
(``"json"`` or a JSON schema) on both routes is enforced by a grammar (runtime.structured), so the
answer parses and validates. ``logprobs``/``top_logprobs`` come in Ollama's shape. As on the OpenAI
routes, a field or option this node does not act on is refused with a 400 naming it, unless it changes
nothing about the answer (``keep_alive``, thread and memory hints, samplers set to "off").
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .. import __version__
from ..database import utc_now_iso
from ..errors import IollmError, ProtocolError
from ..hub import Identity
from ..hub.deps import caller
from ..protocol.server import MessageErrorRoute, read_json_body
from .backends import ChatMessage, TokenLogprob, chat_logprobs_json
from .envfile import parse_envfile
from .openai_api import chat_logprobs
from .openai_stream import first_then_rest
from .resolve import ENVFILE, ModelSpec, split_model_id
from .sampling import check_sampling
from .service import Call, Runtime
from .structured import schema_grammar
from .tools import ToolCall, ToolCallParser, ToolPlan, plan_tools, split_tool_calls

router = APIRouter(prefix="/api", route_class=MessageErrorRoute)

_OPTION_NAMES = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "seed",
    "stop",
    "num_predict",
    "presence_penalty",
    "frequency_penalty",
)
# Options that only say how to run the model (threads, memory, batching, context shifting, which this
# node never does: a prompt too long is refused), never what it answers.
_OPTION_HINTS = {
    "numa",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "low_vram",
    "f16_kv",
    "logits_all",
    "use_mmap",
    "use_mlock",
    "num_thread",
    "num_keep",
    "penalize_newline",  # Ollama itself no longer acts on it
}
# Samplers this node does not have, accepted only at the value that turns them off (or that the
# engines use anyway: llama.cpp's repeat window of 64 tokens).
_OPTION_OFF = {
    "tfs_z": (1, 1.0),
    "typical_p": (1, 1.0),
    "mirostat": (0,),
    "repeat_last_n": (64,),
    "vocab_only": (False,),
    "embedding_only": (False,),
}
_MIROSTAT = {"mirostat_tau", "mirostat_eta"}  # read only when mirostat is on

# Top-level fields each route reads; ``keep_alive`` is accepted and not acted on (engines stay loaded
# until the memory budget needs their room), and ``name`` is Ollama's old spelling of ``model``.
_COMMON = {"model", "name", "stream", "options", "format", "keep_alive", "think", "logprobs", "top_logprobs"}
_CHAT_FIELDS = _COMMON | {"messages", "tools"}
_GENERATE_FIELDS = _COMMON | {"prompt", "system", "raw", "suffix", "template", "context", "images"}
# ``truncate: false`` is what the node does anyway (an input too long is refused, never cut)
_EMBED_FIELDS = {"model", "name", "input", "options", "keep_alive", "truncate"}
_LEGACY_EMBED_FIELDS = {"model", "name", "prompt", "options", "keep_alive"}
# ``name`` and string arguments are OpenAI's spellings, which a peer node's remote backend sends.
_MESSAGE_FIELDS = {"role", "content", "images", "thinking", "tool_calls", "tool_name", "tool_call_id", "name"}


async def body_of(request: Request) -> dict[str, Any]:
    """A request's JSON object body, with its model (Ollama accepts ``name`` for it) required."""
    body = await read_json_body(request)
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model:
        raise ProtocolError("model is required")
    body["model"] = model
    return body


def refuse_fields(body: dict[str, Any], known: set[str]) -> None:
    """400 naming the first field this route does not implement; fields that ask for nothing (empty,
    false) pass, since the ollama client sends some of them empty."""
    for name, value in body.items():
        if name not in known and value not in (None, "", [], {}, False):
            raise ProtocolError(f"the field {name!r} is not supported by this node", param=name)
    think = body.get("think")
    if think not in (None, False):
        raise ProtocolError("think: the models on this node do not think (send think: false)", param="think")
    for name, why in (
        ("suffix", "fill-in-the-middle is not supported"),
        ("template", "a per-request template is not supported; create an environment with TEMPLATE"),
        ("context", "the token context of an earlier answer is not supported; send the history to /api/chat"),
        ("images", "the models on this node read text only"),
    ):
        if body.get(name) not in (None, "", []):
            raise ProtocolError(f"{name}: {why}", param=name)


def options(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling options of a request, checked (runtime.sampling) before any model is looked up;
    an option this node does not act on is refused by name unless it changes nothing."""
    raw = body.get("options") or {}
    if not isinstance(raw, dict):
        raise ProtocolError("options must be an object", param="options")
    for name, value in raw.items():
        if value is None or name in _OPTION_NAMES or name in _OPTION_HINTS or name == "num_ctx":
            continue
        if name in _MIROSTAT and not raw.get("mirostat"):
            continue
        if name in _OPTION_OFF and value in _OPTION_OFF[name]:
            continue
        off = f" (only {_OPTION_OFF[name][0]!r}, which turns it off)" if name in _OPTION_OFF else ""
        raise ProtocolError(f"the option {name!r} is not supported by this node{off}", param=name)
    return check_sampling({k: raw[k] for k in _OPTION_NAMES if raw.get(k) is not None})


def check_context(body: dict[str, Any], spec: ModelSpec) -> None:
    """``num_ctx`` picks the context an engine loads with, which here is the environment's (PARAMETER
    num_ctx); a request may only repeat it."""
    wanted = (body.get("options") or {}).get("num_ctx")
    if wanted is not None and wanted != spec.parameters.get("num_ctx"):
        raise ProtocolError(
            "the option 'num_ctx' is not supported per request; the context is the environment's "
            "(PARAMETER num_ctx in an Envfile, then iollm create)",
            param="num_ctx",
        )


def format_grammar(value: Any) -> str | None:
    """The grammar for Ollama's ``format``: ``"json"`` (any JSON object) or a JSON schema."""
    if value in (None, ""):
        return None
    if value == "json":
        return schema_grammar({"type": "object"}, "format")
    if isinstance(value, dict):
        return schema_grammar(value, "format")
    raise ProtocolError('format must be "json" or a JSON schema object', param="format")


def logprobs_wanted(body: dict[str, Any]) -> int | None:
    """How many alternatives per token ``logprobs``/``top_logprobs`` ask for (None: no logprobs)."""
    return chat_logprobs(body.get("logprobs"), body.get("top_logprobs"))


def tool_plan(body: dict[str, Any]) -> ToolPlan:
    """Ollama's ``tools`` (OpenAI's definitions; ``type`` may be left out) with OpenAI's ``auto``
    choice: Ollama has no ``tool_choice``. The client sends an empty list for no tools."""
    tools = body.get("tools") or None
    if isinstance(tools, list):
        tools = [{"type": "function", **t} if isinstance(t, dict) and "type" not in t else t for t in tools]
    try:
        return plan_tools(tools, None, None)
    except ProtocolError as exc:  # Ollama's errors are a message only: it must name the field
        if exc.message.startswith("tools"):
            raise
        raise ProtocolError(f"tools: {exc.message}", param="tools") from exc


def _history_call(call: Any, index: int) -> dict[str, Any]:
    """An Ollama tool call from the history as OpenAI's (templates read both)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ProtocolError("tool_calls must be a list of {function: {name, arguments}}", param="messages")
    arguments = function.get("arguments", {})
    if not isinstance(arguments, dict | str):
        raise ProtocolError("tool call arguments must be an object", param="messages")
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    ident = call.get("id") if isinstance(call.get("id"), str) else f"call_{index}"
    return {"id": ident, "type": "function", "function": {"name": function["name"], "arguments": text}}


def chat_messages(raw: Any) -> list[ChatMessage]:
    """Ollama messages as the runtime's: tool results (``tool_name``) and assistant tool calls kept;
    images and unknown fields refused by name."""
    if raw is None:
        return []  # Ollama loads the model and answers done
    if not isinstance(raw, list):
        raise ProtocolError("messages must be a list", param="messages")
    out = []
    for message in raw:
        if not isinstance(message, dict):
            raise ProtocolError("each message must be an object", param="messages")
        unknown = sorted(set(message) - _MESSAGE_FIELDS)
        if unknown:
            raise ProtocolError(f"the message field {unknown[0]!r} is not supported", param="messages")
        if message.get("images"):
            raise ProtocolError("images: the models on this node read text only", param="images")
        role = message.get("role", "user")
        if role not in ("system", "user", "assistant", "tool"):
            raise ProtocolError(f"unknown message role {role!r}", param="messages")
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise ProtocolError("message content must be a string", param="messages")
        calls = message.get("tool_calls") if role == "assistant" else None
        if calls is not None and not isinstance(calls, list):
            raise ProtocolError("tool_calls must be a list", param="messages")
        wire = tuple(_history_call(c, i) for i, c in enumerate(calls or ())) or None
        name, ident = message.get("tool_name") or message.get("name"), message.get("tool_call_id")
        out.append(
            ChatMessage(
                role,
                content,
                wire,
                str(ident) if role == "tool" and ident is not None else None,
                name if role == "tool" and isinstance(name, str) else None,
            )
        )
    return out


def ollama_call(call: ToolCall, index: int) -> dict[str, Any] | None:
    """A parsed call in Ollama's shape (arguments as an object); None when its arguments are not a
    JSON object, which Ollama's shape cannot carry (the call's text is then content)."""
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        return None
    if not isinstance(arguments, dict):
        return None
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": arguments}}


def ollama_logprobs(entries: list[TokenLogprob], top: int) -> list[dict[str, Any]]:
    """Ollama's ``logprobs``: token, logprob, bytes and ``top`` alternatives per generated token."""
    return chat_logprobs_json(entries, top)["content"]


def final_stats(call: Call, started: float) -> dict[str, Any]:
    total = int((time.perf_counter() - started) * 1e9)
    ttft = int((call.record.ttft_ms or 0) * 1e6)
    return {
        "done_reason": call.finish_reason if call.finish_reason != "cancelled" else "stop",
        "total_duration": total,
        "load_duration": int(call.load_seconds * 1e9),
        "prompt_eval_count": call.counts.prompt_tokens,
        "prompt_eval_duration": ttft,
        "eval_count": call.counts.completion_tokens,
        "eval_duration": max(total - ttft, 0),
    }


class Answer:
    """One generation as Ollama's objects: content, tool calls (parsed as the text arrives when the
    request had tools) and logprobs (sent with the text they scored)."""

    def __init__(self, model: str, field: str, plan: ToolPlan, top: int | None) -> None:
        self.model = model
        self.field = field
        self.top = top
        self.parser = ToolCallParser(plan) if plan.active else None
        self.waiting: list[TokenLogprob] = []
        self.flushed = False
        self.calls = 0

    def events(self, piece: Any) -> list[str | ToolCall]:
        if self.top is not None:
            self.waiting.extend(piece.logprobs or ())
        if self.parser is None:
            return [piece.text]
        events = self.parser.feed(piece.text)
        if piece.finish_reason:
            events += self.flush()
        return events

    def flush(self) -> list[str | ToolCall]:
        if self.parser is None or self.flushed:
            return []
        self.flushed = True
        return self.parser.flush()

    def obj(self, content: str, calls: Sequence[ToolCall] = (), done: bool = False) -> dict[str, Any] | None:
        """The object for ``content`` and ``calls``; None when it would carry nothing."""
        wire = []
        for call in calls:
            shaped = ollama_call(call, self.calls)
            if shaped is None:
                content += json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
            else:
                wire.append(shaped)
                self.calls += 1
        scored = self.top is not None and bool(self.waiting)
        if not (content or wire or scored or done):
            return None
        out: dict[str, Any] = {"model": self.model, "created_at": utc_now_iso()}
        if self.field == "message":
            out["message"] = {"role": "assistant", "content": content}
            if wire:
                out["message"]["tool_calls"] = wire
        else:
            out["response"] = content
        if scored:
            out["logprobs"] = ollama_logprobs(self.waiting, self.top or 0)
            self.waiting = []
        out["done"] = done
        return out


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


async def ndjson(
    pieces: AsyncIterator[Any], call: Call, answer: Answer, started: float
) -> AsyncIterator[bytes]:
    """NDJSON lines: content as it comes, each tool call in a message of its own once it is complete,
    then the done line with the call's counts."""
    try:
        async for piece in pieces:
            for event in answer.events(piece):
                obj = answer.obj("", [event]) if isinstance(event, ToolCall) else answer.obj(event)
                if obj is not None:
                    yield line(obj)
        for event in answer.flush():  # a generation that ended without a finishing piece
            obj = answer.obj("", [event]) if isinstance(event, ToolCall) else answer.obj(event)
            if obj is not None:
                yield line(obj)
        yield line({**answer.obj("", done=True), **final_stats(call, started)})  # type: ignore[dict-item]
    except Exception as exc:
        message = exc.message if isinstance(exc, IollmError) else f"internal error: {exc}"
        yield line({"error": message})


def streams(body: dict[str, Any]) -> bool:
    return body.get("stream", True) is not False  # Ollama streams unless told not to


async def respond(call: Call, body: dict[str, Any], field: str, plan: ToolPlan, top: int | None):
    started = time.perf_counter()
    answer = Answer(body["model"], field, plan, top)
    if streams(body):
        pieces = await first_then_rest(call)
        return StreamingResponse(ndjson(pieces, call, answer, started), media_type="application/x-ndjson")
    text: list[str] = []
    async for piece in call:
        text.append(piece.text)
        if top is not None:
            answer.waiting.extend(piece.logprobs or ())
    content, calls = "".join(text), []
    if plan.active:
        said, calls = split_tool_calls(content, plan)
        content = said or ""
    return JSONResponse({**answer.obj(content, calls, done=True), **final_stats(call, started)})  # type: ignore[dict-item]


@router.post("/chat")
async def chat(request: Request, who: Identity = Depends(caller)):
    body = await body_of(request)
    refuse_fields(body, _CHAT_FIELDS)
    rt: Runtime = request.app.state.runtime
    messages = chat_messages(body.get("messages"))
    plan = tool_plan(body)
    grammar = format_grammar(body.get("format"))
    if grammar is not None and plan.active:
        raise ProtocolError(
            "format cannot be combined with tools here: the format's grammar would forbid calls",
            param="format",
        )
    top = logprobs_wanted(body)
    wanted = options(body)
    spec = rt.resolve(who, body["model"])
    check_context(body, spec)
    if not rt.messages_for(spec, messages):  # Ollama loads the model and answers done on an empty chat
        return JSONResponse(
            {
                "model": body["model"],
                "created_at": utc_now_iso(),
                "message": {"role": "assistant", "content": ""},
                "done_reason": "load",
                "done": True,
            }
        )
    call = rt.chat(
        who,
        spec,
        messages,
        wanted,
        streams(body),
        logprobs=top,
        tools=plan.tools,
        grammar=grammar,
        grammar_param="format",
    )
    return await respond(call, body, "message", plan, top)


@router.post("/generate")
async def generate(request: Request, who: Identity = Depends(caller)):
    body = await body_of(request)
    refuse_fields(body, _GENERATE_FIELDS)
    rt: Runtime = request.app.state.runtime
    grammar = format_grammar(body.get("format"))
    top = logprobs_wanted(body)
    wanted = options(body)
    spec = rt.resolve(who, body["model"])
    check_context(body, spec)
    prompt = str(body.get("prompt") or "")
    stream = streams(body)
    none = ToolPlan()
    # Without ``raw`` the prompt is a user message, under the model's chat template when it has one.
    if not body.get("raw") and (spec.card.get("chat_template", True) is not False or spec.template):
        messages = [ChatMessage("system", str(body["system"]))] if body.get("system") else []
        messages.append(ChatMessage("user", prompt))
        call = rt.chat(
            who, spec, messages, wanted, stream, logprobs=top, grammar=grammar, grammar_param="format"
        )
        return await respond(call, body, "response", none, top)
    if grammar is not None:
        raise ProtocolError(
            "format is not supported on a raw prompt (raw: true, or a model without a chat template)",
            param="format",
        )
    return await respond(
        rt.complete(who, spec, prompt, wanted, stream, logprobs=top), body, "response", none, top
    )


def details(spec: ModelSpec) -> dict[str, Any]:
    card = spec.card
    return {
        "parent_model": spec.base_repo if spec.base_repo != spec.repo else "",
        "format": card.get("format", "gguf" if spec.backend == "llama.cpp" else spec.backend),
        "family": card.get("architecture", ""),
        "families": [card["architecture"]] if card.get("architecture") else None,
        "parameter_size": card.get("parameter_size", ""),
        "quantization_level": card.get("quantization", ""),
    }


@router.get("/tags")
def tags(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    rt: Runtime = request.app.state.runtime
    hub = request.app.state.hub
    models = []
    for repo in hub.list_repos(who, "model"):
        head = hub.head(repo)
        if not head:
            continue
        try:
            spec = rt.resolver.spec_for(repo.repo_id, head)
        except IollmError:
            continue  # not runnable (no weights, no environment)
        models.append(
            {
                "name": f"{repo.repo_id}:latest",
                "model": f"{repo.repo_id}:latest",
                "modified_at": repo.updated_at,
                "size": spec.size,
                "digest": head,
                "details": details(spec),
            }
        )
    return {"models": models}


@router.post("/show")
async def show(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    body = await body_of(request)
    rt: Runtime = request.app.state.runtime
    spec = rt.resolver.resolve(who, body["model"])
    hub = request.app.state.hub
    envfile_entry = hub.manifest(spec.commit).file(ENVFILE)
    if envfile_entry is not None:
        modelfile = rt.resolver.read_file(envfile_entry).decode()
    else:
        modelfile = f"FROM {spec.repo}@{spec.commit}\n"
    try:
        parsed = parse_envfile(modelfile, source=f"{spec.model_id}/Envfile")
        parameters = "\n".join(
            f"{k} {json.dumps(v) if isinstance(v, str) else v}"
            for k, values in parsed.parameters.items()
            for v in (values if isinstance(values, list) else [values])
        )
    except ValueError:
        parameters = ""
    card = spec.card
    return {
        "modelfile": modelfile,
        "parameters": parameters,
        "template": spec.template or "",
        "system": spec.system or "",
        "license": card.get("license") or "",
        "details": details(spec),
        "model_info": {k: v for k, v in card.items() if k not in ("declared",)},
        "modified_at": utc_now_iso(),
        "capabilities": ["completion", "embedding"] if spec.backend != "remote" else ["completion"],
    }


@router.post("/embed")
async def embed(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    body = await body_of(request)
    refuse_fields(body, _EMBED_FIELDS)  # ``dimensions`` among them: the models' size is fixed
    options(body)
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ProtocolError("input must be a string or a non-empty list of strings")
    rt: Runtime = request.app.state.runtime
    started = time.perf_counter()
    result = await rt.embed(who, rt.resolve(who, body["model"]), texts)
    return {
        "model": body["model"],
        "embeddings": result.vectors,
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "prompt_eval_count": result.prompt_tokens,
    }


@router.post("/embeddings")
async def embeddings_legacy(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    body = await body_of(request)
    refuse_fields(body, _LEGACY_EMBED_FIELDS)
    options(body)
    rt: Runtime = request.app.state.runtime
    result = await rt.embed(who, rt.resolve(who, body["model"]), [str(body.get("prompt") or "")])
    return {"embedding": result.vectors[0]}


@router.get("/version")
def version() -> dict[str, str]:
    return {"version": __version__}


# Engines stay loaded until the memory budget needs their room (no keep-alive timer), which Ollama
# reports for ``keep_alive: -1`` as an expiry the longest duration away (Go's max: about 292 years).
_FOREVER = timedelta(microseconds=(2**63 - 1) // 1000)


@router.get("/ps")
def ps(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    """The loaded models as Ollama lists them, named as /api/tags names them; a model the caller
    cannot read is left out."""
    rt: Runtime = request.app.state.runtime
    expires_at = (datetime.now(UTC) + _FOREVER).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    models = []
    for m in rt.manager.loaded():
        spec: ModelSpec | None = m["spec"]
        if spec is None:
            continue
        try:
            current = rt.resolver.resolve(who, spec.model_id)
        except IollmError:
            continue  # deleted since, or private to someone else
        name = (
            f"{spec.model_id}:latest" if current.commit == spec.commit else f"{spec.model_id}@{spec.commit}"
        )
        entry: dict[str, Any] = {
            "name": name,
            "model": name,
            "size": spec.size,
            "digest": spec.commit,
            "details": details(spec),
            "expires_at": expires_at,
            "size_vram": 0,  # engines run on the CPU
        }
        if m["context_length"]:
            entry["context_length"] = m["context_length"]
        models.append(entry)
    return {"models": models}


__all__ = ["router", "split_model_id"]
