"""Ollama-compatible API: /api/tags, /api/chat, /api/generate, /api/show (NDJSON streaming as Ollama does).

Ollama streams by default (``"stream": true`` unless the request says false), reports durations in
nanoseconds, and sends errors as ``{"error": "..."}`` (mid-stream as a final NDJSON line).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
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
from .backends import ChatMessage
from .envfile import parse_envfile
from .openai_api import first_then_rest
from .resolve import ENVFILE, ModelSpec, split_model_id
from .sampling import check_sampling
from .service import Call, Runtime

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


async def body_of(request: Request) -> dict[str, Any]:
    """A request's JSON object body, with its model (Ollama accepts ``name`` for it) required."""
    body = await read_json_body(request)
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model:
        raise ProtocolError("model is required")
    body["model"] = model
    return body


def options(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling options of a request, checked (runtime.sampling) before any model is looked up."""
    raw = body.get("options") or {}
    if not isinstance(raw, dict):
        raise ProtocolError("options must be an object", param="options")
    return check_sampling({k: raw[k] for k in _OPTION_NAMES if k in raw})


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


async def ndjson(
    pieces: AsyncIterator[Any], call: Call, model: str, started: float, field: str
) -> AsyncIterator[bytes]:
    def line(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    def payload(text: str) -> dict[str, Any]:
        return (
            {"message": {"role": "assistant", "content": text}} if field == "message" else {"response": text}
        )

    try:
        async for piece in pieces:
            if piece.text:
                yield line(
                    {"model": model, "created_at": utc_now_iso(), **payload(piece.text), "done": False}
                )
        yield line(
            {
                "model": model,
                "created_at": utc_now_iso(),
                **payload(""),
                "done": True,
                **final_stats(call, started),
            }
        )
    except Exception as exc:
        message = exc.message if isinstance(exc, IollmError) else f"internal error: {exc}"
        yield line({"error": message})


def streams(body: dict[str, Any]) -> bool:
    return body.get("stream", True) is not False  # Ollama streams unless told not to


async def respond(call: Call, body: dict[str, Any], field: str):
    started = time.perf_counter()
    if streams(body):
        pieces = await first_then_rest(call)
        return StreamingResponse(
            ndjson(pieces, call, body["model"], started, field), media_type="application/x-ndjson"
        )
    text = await call.text()
    content = (
        {"message": {"role": "assistant", "content": text}} if field == "message" else {"response": text}
    )
    return JSONResponse(
        {
            "model": body["model"],
            "created_at": utc_now_iso(),
            **content,
            "done": True,
            **final_stats(call, started),
        }
    )


@router.post("/chat")
async def chat(request: Request, who: Identity = Depends(caller)):
    body = await body_of(request)
    rt: Runtime = request.app.state.runtime
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise ProtocolError("messages must be a list")
    messages = [
        ChatMessage(str(m.get("role", "user")), str(m.get("content", ""))) for m in raw if isinstance(m, dict)
    ]
    wanted = options(body)
    spec = rt.resolve(who, body["model"])
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
    return await respond(rt.chat(who, spec, messages, wanted, streams(body)), body, "message")


@router.post("/generate")
async def generate(request: Request, who: Identity = Depends(caller)):
    body = await body_of(request)
    rt: Runtime = request.app.state.runtime
    wanted = options(body)
    spec = rt.resolve(who, body["model"])
    prompt = str(body.get("prompt") or "")
    stream = streams(body)
    # Without ``raw`` the prompt is a user message, under the model's chat template when it has one.
    if not body.get("raw") and (spec.card.get("chat_template", True) is not False or spec.template):
        messages = [ChatMessage("system", str(body["system"]))] if body.get("system") else []
        messages.append(ChatMessage("user", prompt))
        return await respond(rt.chat(who, spec, messages, wanted, stream), body, "response")
    return await respond(rt.complete(who, spec, prompt, wanted, stream), body, "response")


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
