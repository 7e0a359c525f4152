"""A model client that calls the node's runtime in-process and reports every generated piece as a
``token`` event of the node that asked for it, so the editor shows output while it is written."""

from __future__ import annotations

from ..hub import Identity
from ..paths.executor import EventSink, current_node
from ..paths.serving import RuntimeClient
from ..runtime import Call, Runtime


class LiveClient(RuntimeClient):
    """A ``paths.serving.RuntimeClient`` (calls are metered to ``caller``) that streams its tokens."""

    stream = True

    def __init__(self, runtime: Runtime, caller: Identity, emit: EventSink) -> None:
        super().__init__(runtime, caller)
        self.emit = emit

    async def answer(self, model: str, call: Call) -> str:
        node = current_node.get()
        parts: list[str] = []
        async for piece in call:
            if piece.text:
                parts.append(piece.text)
                await self.emit({"type": "token", "node": node, "model": model, "text": piece.text})
        return "".join(parts)
