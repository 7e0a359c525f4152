"""The floor under any Python gateway: a bare FastAPI route on uvicorn that answers a 1-token completion
without a model. ``bench/runtime.py`` times it in the same loop as the node and ``llama_cpp.server``, so
their overheads can be split into what loopback HTTP and the ASGI stack cost and what is their own."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/v1/completions")
async def completions(request: Request) -> dict[str, Any]:
    body = await request.json()
    return {
        "id": "cmpl-floor",
        "object": "text_completion",
        "model": body.get("model"),
        "choices": [{"index": 0, "text": " there", "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }


_RAW_BODY = json.dumps(
    {
        "id": "cmpl-floor",
        "object": "text_completion",
        "model": "smol",
        "choices": [{"index": 0, "text": " there", "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
).encode()


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor under any Python server on uvicorn: a bare ASGI callable, no framework at all. What it
    costs over an in-process call is loopback HTTP, uvicorn and the client; no gateway can go lower."""
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    json.loads(body or b"{}")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_RAW_BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _RAW_BODY})
