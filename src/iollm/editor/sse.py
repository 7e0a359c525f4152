"""Server-sent events: one JSON object per event, so the browser reads them with a fetch stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse

Emit = Callable[[dict[str, Any]], Awaitable[None]]


def encode(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def stream(work: Callable[[Emit], Awaitable[dict[str, Any]]]) -> StreamingResponse:
    """Run ``work(emit)`` in a task and stream what it emits, then its result (``type`` set by ``work``),
    or an ``error`` event; a client that disconnects cancels the work, so nothing runs unseen."""

    async def events() -> AsyncIterator[bytes]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def emit(event: dict[str, Any]) -> None:
            await queue.put(event)

        async def run() -> None:
            try:
                await queue.put(await work(emit))
            except Exception as exc:
                await queue.put({"type": "error", "message": f"{exc}", "error": exc.__class__.__name__})
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            while (event := await queue.get()) is not None:
                yield encode(event)
        finally:
            task.cancel()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
