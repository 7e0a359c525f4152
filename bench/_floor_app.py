"""The floor under any Python gateway: a bare FastAPI route on uvicorn that answers a 1-token completion
without a model. ``bench/runtime.py`` times it in the same loop as the node and ``llama_cpp.server``, so
their overheads can be split into what loopback HTTP and the ASGI stack cost and what is their own."""

from __future__ import annotations

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
