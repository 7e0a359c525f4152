"""The runtime as the APIs see it: resolve a model, wait for a turn, generate on a worker thread,
stream pieces back to the event loop, and write exactly one usage record per call.

The generation thread owns the engine until it finishes: it releases the engine's slot and writes the
usage record itself, so a client that disconnects cannot leave an engine busy or a call unmetered.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..hub import Identity
from ..protocol import Unauthorized
from .backends import Backend, ChatMessage, Counts, Embedding, GenerationParams, Piece
from .manager import Loaded, ModelManager
from .resolve import ModelSpec, Resolver
from .usage import UsageLog, UsageRecord

_END = object()

# Envfile / Ollama PARAMETER names -> GenerationParams fields
_PARAM_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "num_predict": "max_tokens",
    "max_tokens": "max_tokens",
    "stop": "stop",
}

Admission = Callable[[Identity, ModelSpec], None]


def params_for(spec: ModelSpec, request: dict[str, Any]) -> GenerationParams:
    """Request values win over the environment's PARAMETERs, which win over defaults."""
    params = GenerationParams()
    for source in (spec.parameters, request):
        for name, value in source.items():
            field_name = _PARAM_NAMES.get(name)
            if field_name is None or value is None:
                continue
            if field_name == "stop":
                value = [value] if isinstance(value, str) else list(value)
            if field_name == "max_tokens" and int(value) < 0:
                value = None
            setattr(params, field_name, value)
    return params


@dataclass
class CallInfo:
    """What a finished (or running) call knows; the APIs read it to build their final message."""

    spec: ModelSpec
    record: UsageRecord
    counts: Counts
    load_seconds: float = 0.0
    finish_reason: str = "stop"


class Runtime:
    def __init__(
        self,
        resolver: Resolver,
        manager: ModelManager,
        usage: UsageLog,
        anonymous_inference: bool = False,
    ) -> None:
        self.resolver = resolver
        self.manager = manager
        self.usage = usage
        self.anonymous_inference = anonymous_inference
        self.admission: list[Admission] = []  # e.g. the mining layer's credit check
        # Generations run on reused threads; engines release the GIL while computing.
        self._threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="generate")

    def caller_name(self, caller: Identity) -> str:
        if caller.anonymous:
            if not self.anonymous_inference:
                raise Unauthorized(
                    "inference needs a token (Authorization: Bearer <token>); start the node with "
                    "--anonymous-inference to allow anonymous local use"
                )
            return "anonymous"
        return caller.name or "anonymous"

    def resolve(self, caller: Identity, model: str) -> ModelSpec:
        self.caller_name(caller)
        spec = self.resolver.resolve(caller, model)
        for check in self.admission:
            check(caller, spec)
        return spec

    def messages_for(self, spec: ModelSpec, messages: list[ChatMessage]) -> list[ChatMessage]:
        """The environment's MESSAGE history goes before the caller's conversation."""
        preset = [ChatMessage(role, content) for role, content in spec.messages]
        return preset + messages if preset else messages

    async def generate(
        self,
        caller: Identity,
        spec: ModelSpec,
        kind: str,
        run: Callable[[Backend, Counts, threading.Event], Iterator[Piece]],
        stream: bool,
        info_out: list[CallInfo],
    ) -> AsyncIterator[Piece]:
        """Yield pieces of one generation; ``info_out`` receives the call's CallInfo first."""
        started = time.perf_counter()
        record = UsageRecord(
            caller=self.caller_name(caller),
            model=spec.model_id,
            repo=spec.base_repo or spec.repo,
            commit=spec.base_commit or spec.commit,
            backend=spec.backend,
            kind=kind,
            stream=stream,
        )
        counts = Counts()
        info = CallInfo(spec, record, counts)
        info_out.append(info)
        loaded = await self.manager.acquire(spec)
        info.load_seconds = loaded.load_seconds if loaded.first_use else 0.0
        loaded.first_use = False
        await self.manager.slot(loaded)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def work() -> None:
            status, error = "ok", None
            try:
                for piece in run(loaded.backend, counts, cancel):
                    if record.ttft_ms is None and piece.text:
                        record.ttft_ms = round((time.perf_counter() - started) * 1000, 3)
                    if piece.finish_reason:
                        info.finish_reason = piece.finish_reason
                        if piece.finish_reason == "cancelled":
                            status = "cancelled"
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except BaseException as exc:  # handed to the request; the engine stays usable
                status, error = "error", f"{exc.__class__.__name__}: {exc}"
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                if cancel.is_set() and status == "ok" and info.finish_reason not in ("stop", "length"):
                    status = "cancelled"
                self._finish(loaded, record, counts, started, status, error, loop)
                loop.call_soon_threadsafe(pieces.put_nowait, _END)

        self._threads.submit(work)
        try:
            while (item := await pieces.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # no-op when finished; stops the engine after one token when the client left

    def _finish(
        self,
        loaded: Loaded,
        record: UsageRecord,
        counts: Counts,
        started: float,
        status: str,
        error: str | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        record.prompt_tokens = counts.prompt_tokens
        record.completion_tokens = counts.completion_tokens
        record.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        record.status = status
        record.error = error
        self.usage.record(record)
        loop.call_soon_threadsafe(self.manager.release, loaded)

    async def embed(self, caller: Identity, spec: ModelSpec, texts: list[str]) -> Embedding:
        started = time.perf_counter()
        record = UsageRecord(
            caller=self.caller_name(caller),
            model=spec.model_id,
            repo=spec.base_repo or spec.repo,
            commit=spec.base_commit or spec.commit,
            backend=spec.backend,
            kind="embedding",
            stream=False,
        )
        loaded = await self.manager.acquire(spec)
        await self.manager.slot(loaded)
        try:
            result = await asyncio.to_thread(loaded.backend.embed, texts)
            record.prompt_tokens = result.prompt_tokens
        except BaseException as exc:
            record.status, record.error = "error", f"{exc.__class__.__name__}: {exc}"
            raise
        finally:
            self.manager.release(loaded)
            record.latency_ms = round((time.perf_counter() - started) * 1000, 3)
            self.usage.record(record)
        return result

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=False)
        self.usage.close()
        self.manager.unload_all()
