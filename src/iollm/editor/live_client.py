"""A model client that calls the node's runtime in-process and reports every generated piece as a
``token`` event of the node that asked for it, so the editor shows output while it is written."""

from __future__ import annotations

import time
from typing import Any

from ..hub import Identity
from ..paths.clients import CallResult
from ..paths.executor import EventSink, current_node
from ..runtime import ChatMessage, Runtime, params_for
from ..runtime.service import CallInfo


class LiveClient:
    """Like ``paths.serving.RuntimeClient`` (calls are metered to ``caller``), plus streamed tokens."""

    def __init__(self, runtime: Runtime, caller: Identity, emit: EventSink) -> None:
        self.runtime = runtime
        self.caller = caller
        self.emit = emit

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        started = time.perf_counter()
        node = current_node.get()
        spec = self.runtime.resolve(self.caller, model)
        chat = self.runtime.messages_for(spec, [ChatMessage(m["role"], m["content"]) for m in messages])
        generation = params_for(spec, params)
        info: list[CallInfo] = []
        pieces = self.runtime.generate(
            self.caller, spec, "chat", lambda b, c, x: b.chat(chat, generation, c, x), True, info
        )
        parts: list[str] = []
        async for piece in pieces:
            if piece.text:
                parts.append(piece.text)
                await self.emit({"type": "token", "node": node, "model": model, "text": piece.text})
        counts = info[0].counts
        return CallResult(
            model,
            "".join(parts),
            counts.prompt_tokens,
            counts.completion_tokens,
            time.perf_counter() - started,
        )
