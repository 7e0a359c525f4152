"""A worker: one local model served over a tiny OpenAI-compatible API, inside an environment's venv.

The node starts ``<venv python> -m iollm.runtime.worker_main ...`` for an environment with REQUIRES, so
the model runs where the pinned packages are importable while the node's own interpreter stays clean.
It serves ``/v1/chat/completions``, ``/v1/completions`` (SSE streams with exact ``include_usage``
counts), ``/v1/embeddings``, ``/tokenize`` and ``/health`` (which reports the interpreter and whether
each required package imports), and exits when the node that started it is gone.

Log-probabilities travel in each event's ``choices[0].logprobs`` (OpenAI's completion shape) when the
body asks for ``logprobs``; ``prompt_logprobs: true`` adds a first, text-less event scoring the prompt
(the node echoes the prompt text itself), and each entry's bytes and ranked alternatives (chat logprobs).
``tools`` (rendered by the template), ``grammar``/``grammar_param`` (GBNF) and messages' ``tool_calls`` and
``tool_call_id`` reach the backend as the node sent them; the answer is the model's raw text, which the
node parses. A parameter the backend refuses is a 400 ``unsupported_parameter`` naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .backends import registry
from .backends.base import (
    Backend,
    BackendFailure,
    ChatMessage,
    ContextTooLong,
    Counts,
    GenerationParams,
    Piece,
    Unsupported,
    logprobs_from_json,
    logprobs_wire,
)
from .backends.registry import LoadOptions

_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


def load_backend(args: argparse.Namespace) -> Backend:
    template = Path(args.template_file).read_text() if args.template_file else None
    system = Path(args.system_file).read_text() if args.system_file else None
    options = LoadOptions(Path(args.path), args.ctx, template=template, system=system, batch=args.batch)
    return registry.named(args.backend).load(options)


def package_report(names: list[str]) -> dict[str, Any]:
    """For each required distribution: its version, where it is installed, and whether it imports."""
    report: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {"version": None, "location": None, "imports": False, "modules": []}
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            report[name] = entry
            continue
        entry["version"] = dist.version
        entry["location"] = str(dist.locate_file(""))
        modules = _top_level(dist)
        entry["modules"] = modules
        try:
            for module in modules:
                importlib.import_module(module)
            entry["imports"] = bool(modules)
        except Exception as exc:  # a broken package is reported, not fatal
            entry["error"] = f"{exc.__class__.__name__}: {exc}"
        report[name] = entry
    return report


def _top_level(dist: importlib.metadata.Distribution) -> list[str]:
    listed = dist.read_text("top_level.txt")
    if listed:
        return sorted({line.strip() for line in listed.splitlines() if line.strip()})
    modules = set()
    for file in dist.files or ():
        first = file.parts[0]
        if first.endswith((".dist-info", ".egg-info", ".data")) or first in ("..", "__pycache__"):
            continue
        if len(file.parts) == 1 and not first.endswith(".py"):
            continue
        modules.add(first.removesuffix(".py"))
    return sorted(modules)


def params_from(body: dict[str, Any]) -> GenerationParams:
    params = GenerationParams()
    for name in _FIELDS:
        if body.get(name) is not None:
            setattr(params, name, body[name])
    limit = body.get("max_completion_tokens")
    limit = body.get("max_tokens") if limit is None else limit
    params.max_tokens = int(limit) if limit is not None and int(limit) >= 0 else None  # 0: score only
    stop = body.get("stop")
    params.stop = [stop] if isinstance(stop, str) else list(stop or [])
    if body.get("logprobs") is not None:
        params.logprobs = int(body["logprobs"])
        params.prompt_logprobs = bool(body.get("prompt_logprobs"))
    params.tools = body.get("tools") or None
    params.grammar = body.get("grammar")
    params.grammar_param = str(body.get("grammar_param") or "response_format")
    return params


def build_app(backend: Backend, args: argparse.Namespace) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    turn = threading.Lock()  # one generation at a time: the engine is not re-entrant
    required = [n for n in (args.requires or "").split(",") if n]

    def error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"message": message, "type": kind, "code": code, "param": param}
        return JSONResponse({"error": body}, status_code=status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "prefix": sys.prefix,
            "executable": sys.executable,
            "backend": backend.name,
            "context_length": backend.context_length,
            "packages": package_report(required),
        }

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, int]:
        body = await request.json()
        return {"count": backend.count_tokens(str(body.get("text", "")))}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        body = await request.json()
        texts = [body["input"]] if isinstance(body.get("input"), str) else list(body.get("input") or [])
        try:
            result = await asyncio.to_thread(_locked, turn, backend.embed, texts)
        except ContextTooLong as exc:
            return error(400, f"context: {exc}", "context_length_exceeded")
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(result.vectors)]
        usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
        return {"object": "list", "data": data, "model": body.get("model", ""), "usage": usage}

    async def generate(body: dict[str, Any], chat: bool) -> Any:
        params = params_from(body)
        if chat:
            messages = [ChatMessage.from_wire(m) for m in body["messages"]]

            def run(counts: Counts, cancel: threading.Event) -> Iterator[Piece]:
                return backend.chat(messages, params, counts, cancel)
        else:
            prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]

            def run(counts: Counts, cancel: threading.Event) -> Iterator[Piece]:
                return backend.complete(prompt, params, counts, cancel)

        events = _events(run, turn, body.get("model", ""), chat)
        try:
            first = await events.__anext__()
        except ContextTooLong as exc:
            return error(400, f"context: {exc}", "context_length_exceeded")
        except Unsupported as exc:
            return error(400, str(exc), Unsupported.code, exc.details.get("param"))
        except Exception as exc:
            return error(500, f"{exc.__class__.__name__}: {exc}", "backend_error")
        if not body.get("stream"):
            return await _collect(first, events, chat, body.get("model", ""))

        async def stream() -> AsyncIterator[bytes]:
            yield first
            async for event in events:
                yield event

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await generate(await request.json(), chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await generate(await request.json(), chat=False)

    return app


def _locked(lock: threading.Lock, fn: Any, *args: Any) -> Any:
    with lock:
        return fn(*args)


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def _events(run: Any, turn: threading.Lock, model: str, chat: bool) -> AsyncIterator[bytes]:
    """SSE events of one generation, run on a thread; the first event is the role (or first text)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()
    counts = Counts()
    done = object()

    def work() -> None:
        try:
            with turn:
                for piece in run(counts, cancel):
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, done)

    ident = f"{'chatcmpl' if chat else 'cmpl'}-{os.getpid()}-{time.monotonic_ns()}"
    obj = "chat.completion.chunk" if chat else "text_completion"
    created = int(time.time())

    def chunk(text: str | None, finish: str | None, piece: Piece | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice["text"] = text or ""
        if piece is not None and piece.logprobs:
            choice["logprobs"] = logprobs_wire(piece.logprobs)
        return _sse({"id": ident, "object": obj, "created": created, "model": model, "choices": [choice]})

    threading.Thread(target=work, name="worker-generate", daemon=True).start()
    try:
        item = await queue.get()
        if isinstance(item, BaseException):
            raise item
        if chat:
            yield _sse(
                {
                    "id": ident,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ],
                }
            )
        while item is not done:
            if isinstance(item, BaseException):
                yield _sse(
                    {"error": {"message": f"{item.__class__.__name__}: {item}", "type": "server_error"}}
                )
                break
            if item.text or item.logprobs:
                yield chunk(item.text, None, item)
            if item.finish_reason and item.finish_reason != "cancelled":
                yield chunk(None, item.finish_reason)
            item = await queue.get()
        usage = {
            "prompt_tokens": counts.prompt_tokens,
            "completion_tokens": counts.completion_tokens,
            "total_tokens": counts.prompt_tokens + counts.completion_tokens,
        }
        yield _sse(
            {"id": ident, "object": obj, "created": created, "model": model, "choices": [], "usage": usage}
        )
        yield b"data: [DONE]\n\n"
    finally:
        cancel.set()  # the client went away (or we finished): stop the engine after this token


async def _collect(first: bytes, events: AsyncIterator[bytes], chat: bool, model: str) -> dict[str, Any]:
    """A non-streaming answer assembled from the same events."""
    text, finish, usage, scored = [], "stop", {}, []
    for raw in [first] + [e async for e in events]:
        payload = raw.decode()[6:].strip()
        if payload == "[DONE]":
            continue
        event = json.loads(payload)
        if "error" in event:
            raise BackendFailure(event["error"]["message"])
        usage = event.get("usage") or usage
        for choice in event.get("choices") or []:
            text.append((choice.get("delta") or {}).get("content") or choice.get("text") or "")
            finish = choice.get("finish_reason") or finish
            if choice.get("logprobs"):
                scored.extend(logprobs_from_json(choice["logprobs"]))
    body = "".join(text)
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if scored:
        choice["logprobs"] = logprobs_wire(scored)
    if chat:
        choice["message"] = {"role": "assistant", "content": body}
    else:
        choice["text"] = body
    return {
        "object": "chat.completion" if chat else "text_completion",
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def _watch_parent(parent: int) -> None:
    """Exit when the node that started us is gone (its session differs, so no signal reaches us)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="iollm-worker", description=__doc__)
    local = [kind.name for kind in registry.known() if not kind.remote]
    parser.add_argument("--backend", required=True, choices=local)
    parser.add_argument("--path", required=True, help="GGUF file or model folder")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--template-file")
    parser.add_argument("--system-file")
    parser.add_argument("--requires", default="", help="comma-separated distributions to report in /health")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True).start()
    backend = load_backend(args)
    import uvicorn

    uvicorn.run(
        build_app(backend, args), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
