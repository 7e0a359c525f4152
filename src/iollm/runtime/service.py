"""The runtime as the APIs see it: resolve a model, wait for a turn, generate on a worker thread,
stream pieces back to the event loop, and write exactly one usage record per call.

``Runtime.chat`` and ``Runtime.complete`` are the one recipe every caller uses (the OpenAI and Ollama
routes, paths, the editor): resolve the id, put the environment's MESSAGE history first, merge the
request's sampling values over its PARAMETERs, and start a ``Call``. An id in a namespace registered in
``Runtime.virtual_models`` (``path/NAME``: a workflow, served by the paths layer) is resolved and
answered by that handler instead, so every chat route serves it alike.

The generation thread owns the engine until it finishes: it releases the engine's slot and writes the
usage record itself, so a client that disconnects cannot leave an engine busy or a call unmetered.

Priced calls are reserved before their first token: once the engine has tokenized the prompt, the
``reservation`` hook (the mining layer's) is told the most the call can process (``CallBound``) and
holds its price in the ledger, or refuses the call. The hold is settled when the call's usage record is
billed, so every call that got one writes its record, whether it ends, fails or loses its client.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import Unauthorized
from ..hub import Identity
from .backends import Backend, ChatMessage, Counts, Embedding, GenerationParams, Piece, Unsupported
from .manager import Loaded, ModelManager
from .metrics import Metrics, public_label
from .resolve import ModelSpec, NotRunnable, Resolver
from .sampling import check_sampling
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

# A token stands for at least one byte of the text it encodes (byte-level BPE; SentencePiece falls back
# to bytes), so when an engine cannot count a prompt before it answers (a remote server), its UTF-8
# length plus room for the chat template's special tokens bounds the prompt's tokens.
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS = 64


@dataclass(frozen=True)
class CallBound:
    """The most one call can process, known before its first token: what a priced call reserves.

    ``prompt_tokens`` is the exact count when the engine tokenized the prompt up front (``prompt_exact``),
    else an upper bound; ``completion_tokens`` is None when nothing bounds the answer (no ``max_tokens``
    and a context the engine does not report)."""

    call_id: str  # the usage record's id: billing that record settles the reservation
    kind: str
    prompt_tokens: int
    prompt_exact: bool
    completion_tokens: int | None


Reserve = Callable[[Identity, ModelSpec, CallBound], None]


def call_bound(
    call_id: str, kind: str, counts: Counts, params: GenerationParams, context: int, prompt_bound: int
) -> CallBound:
    """The bound of a call whose engine has ``context`` tokens (0: unknown) and has or has not counted
    the prompt yet (``counts.prompt_tokens``); ``prompt_bound`` is the prompt's byte bound."""
    exact = counts.prompt_tokens > 0
    if context > 0:
        # An engine that did not count the prompt may add a system prompt or template of its own.
        prompt = min(counts.prompt_tokens, context) if exact else context
        room = context - prompt if exact else context
        completion = room if params.max_tokens is None else min(params.max_tokens, room)
    else:
        prompt = counts.prompt_tokens if exact else prompt_bound
        completion = params.max_tokens
    return CallBound(call_id, kind, prompt, exact, completion)


class _Reserving:
    """The engine as one call's ``run`` sees it: right after the engine is handed the prompt (llama.cpp
    and transformers tokenize it then; generation starts only when the pieces are read), ``reserve``
    gets the call's bound, and a refusal ends the call before any token is generated."""

    def __init__(self, backend: Backend, reserve: Callable[[Counts, GenerationParams, int], None]) -> None:
        self._backend = backend
        self._reserve = reserve

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def chat(
        self, messages: list[ChatMessage], params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        pieces = self._backend.chat(messages, params, counts, cancel)
        size = sum(len(m.content.encode()) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages)
        # tool definitions and calls are rendered into the prompt too
        size += len(json.dumps([params.tools, [m.tool_calls for m in messages]]).encode())
        self._reserve(counts, params, size + TEMPLATE_TOKENS)
        return pieces

    def complete(
        self, prompt: str, params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        pieces = self._backend.complete(prompt, params, counts, cancel)
        self._reserve(counts, params, len(prompt.encode()) + TEMPLATE_TOKENS)
        return pieces


def params_for(spec: ModelSpec, request: dict[str, Any]) -> GenerationParams:
    """Request values win over the environment's PARAMETERs, which win over defaults. Request values
    are checked (runtime.sampling: 400 naming the parameter); the environment's PARAMETERs are used
    as its author wrote them."""
    params = GenerationParams()
    for source in (spec.parameters, check_sampling(request)):
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
class Call:
    """One chat or completion call. ``async for piece in call`` runs it (an engine is acquired when the
    first piece is asked for); ``record``, ``counts`` and ``finish_reason`` are final once the pieces are
    exhausted, and the APIs read them to build their last message."""

    spec: ModelSpec
    record: UsageRecord
    counts: Counts = field(default_factory=Counts)
    load_seconds: float = 0.0
    finish_reason: str = "stop"
    pieces: AsyncIterator[Piece] | None = field(default=None, repr=False)  # set by whoever runs the call

    def __aiter__(self) -> AsyncIterator[Piece]:
        if self.pieces is None:
            raise RuntimeError(f"the call to {self.spec.model_id} was never started")
        return self.pieces

    async def text(self) -> str:
        """Run the call to its end and return the generated text."""
        return "".join([piece.text async for piece in self])


class VirtualModels(Protocol):
    """Ids served by something other than an engine, in one namespace (``path/NAME``: a workflow run by
    the paths layer, which sits above the runtime and is registered as ``runtime.virtual_models["path"]``
    when the node starts). ``resolve`` names the exact version (or raises ModelNotFound); ``chat`` starts
    the call the way ``Runtime.chat`` does and writes its one usage record when it ends. Such a model
    answers chat calls only."""

    def list_models(self, caller: Identity) -> list[dict[str, Any]]: ...

    def resolve(self, caller: Identity, model: str) -> ModelSpec: ...

    def chat(
        self,
        caller: Identity,
        spec: ModelSpec,
        messages: list[ChatMessage],
        params: dict[str, Any],
        stream: bool,
    ) -> Call: ...


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
        self.reservation: Reserve | None = None  # holds a priced call's most cost before its first token
        self.virtual_models: dict[str, VirtualModels] = {}  # namespace -> handler (``path``: workflows)
        self.metrics: Metrics | None = None  # GET /metrics (runtime.metrics)
        try:
            self.metrics = Metrics(manager, public_label(resolver))
        except ImportError:  # prometheus_client comes with the runtime extra
            pass
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
        """The spec ``model`` names for ``caller``, admitted by every ``admission`` check (a virtual
        model's inner calls are admitted one by one, when it makes them)."""
        self.caller_name(caller)
        virtual = self.virtual_for(model)
        if virtual is not None:
            return virtual.resolve(caller, model)
        spec = self.resolver.resolve(caller, model)
        for check in self.admission:
            check(caller, spec)
        return spec

    def messages_for(self, spec: ModelSpec, messages: list[ChatMessage]) -> list[ChatMessage]:
        """The environment's MESSAGE history goes before the caller's conversation."""
        preset = [ChatMessage(role, content) for role, content in spec.messages]
        return preset + messages if preset else messages

    def virtual_for(self, model: str) -> VirtualModels | None:
        """The handler that serves ``model`` when its namespace is registered (``path/NAME``), else None."""
        namespace, slash, _ = model.partition("/")
        return self.virtual_models.get(namespace) if slash else None

    def chat(
        self,
        caller: Identity,
        model: str | ModelSpec,
        messages: list[ChatMessage],
        params: dict[str, Any],
        stream: bool = False,
        logprobs: int | None = None,
        tools: list[dict[str, Any]] | None = None,
        grammar: str | None = None,
        grammar_param: str = "response_format",
    ) -> Call:
        """A chat call to ``model`` (an id, or the spec it was already resolved to). ``params`` are the
        request's sampling values, which win over the environment's PARAMETERs (``params_for``);
        ``logprobs``, ``tools``, ``grammar`` and ``grammar_param`` as in ``GenerationParams``."""
        spec = model if isinstance(model, ModelSpec) else self.resolve(caller, model)
        virtual = self.virtual_for(spec.model_id)
        if virtual is not None:
            asked = [
                name
                for name, value in (("logprobs", logprobs), ("tools", tools), (grammar_param, grammar))
                if value is not None
            ]
            if asked:
                raise Unsupported(
                    f"{spec.model_id} is a workflow; it cannot honour {asked[0]}", param=asked[0]
                )
            return virtual.chat(caller, spec, messages, params, stream)
        conversation = self.messages_for(spec, messages)
        generation = params_for(spec, params)
        generation.logprobs = logprobs
        generation.tools = tools
        generation.grammar = grammar
        generation.grammar_param = grammar_param
        return self._start(
            caller, spec, "chat", lambda b, c, x: b.chat(conversation, generation, c, x), stream
        )

    def complete(
        self,
        caller: Identity,
        model: str | ModelSpec,
        prompt: str,
        params: dict[str, Any],
        stream: bool = False,
        logprobs: int | None = None,
        prompt_logprobs: bool = False,
    ) -> Call:
        """A completion of the raw ``prompt`` (no chat template); ``logprobs`` and ``prompt_logprobs``
        as in ``GenerationParams``."""
        spec = self._engine_spec(caller, model)
        generation = params_for(spec, params)
        generation.logprobs = logprobs
        generation.prompt_logprobs = prompt_logprobs
        return self._start(
            caller, spec, "completion", lambda b, c, x: b.complete(prompt, generation, c, x), stream
        )

    def _engine_spec(self, caller: Identity, model: str | ModelSpec) -> ModelSpec:
        spec = model if isinstance(model, ModelSpec) else self.resolve(caller, model)
        if self.virtual_for(spec.model_id) is not None:
            raise NotRunnable(f"{spec.model_id} answers chat calls only (send it to a chat route)")
        return spec

    def new_call(self, caller: Identity, spec: ModelSpec, kind: str, stream: bool) -> Call:
        """A call whose usage record names the caller (who must be allowed to infer) and the model's
        exact version; whoever runs it sets ``pieces`` and writes the record once it ends."""
        return Call(spec, self._record(caller, spec, kind, stream))

    def _record(self, caller: Identity, spec: ModelSpec, kind: str, stream: bool) -> UsageRecord:
        return UsageRecord(
            caller=self.caller_name(caller),
            model=spec.model_id,
            repo=spec.base_repo or spec.repo,
            commit=spec.base_commit or spec.commit,
            backend=spec.backend,
            kind=kind,
            stream=stream,
        )

    def _start(
        self,
        caller: Identity,
        spec: ModelSpec,
        kind: str,
        run: Callable[[Backend, Counts, threading.Event], Iterator[Piece]],
        stream: bool,
    ) -> Call:
        call = self.new_call(caller, spec, kind, stream)
        call.pieces = self._generate(caller, call, run)
        return call

    async def _generate(
        self,
        caller: Identity,
        call: Call,
        run: Callable[[Backend, Counts, threading.Event], Iterator[Piece]],
    ) -> AsyncIterator[Piece]:
        """Yield the pieces of one generation, filling in ``call`` as they come."""
        started = time.perf_counter()
        spec, record, counts, kind = call.spec, call.record, call.counts, call.record.kind
        loaded = await self.manager.acquire(spec)
        call.load_seconds = loaded.load_seconds if loaded.first_use else 0.0
        loaded.first_use = False
        await self.manager.slot(loaded)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        refused = False

        def reserve(counts: Counts, params: GenerationParams, prompt_bound: int) -> None:
            nonlocal refused
            if self.reservation is None:
                return
            context = int(getattr(loaded.backend, "context_length", 0) or 0)
            try:
                self.reservation(
                    caller, spec, call_bound(record.id, kind, counts, params, context, prompt_bound)
                )
            except Exception:
                refused = True  # nothing was held and nothing will run: no usage record
                raise

        def work() -> None:
            status, error = "ok", None
            try:
                engine = loaded.backend if self.reservation is None else _Reserving(loaded.backend, reserve)
                for piece in run(engine, counts, cancel):  # type: ignore[arg-type]
                    if record.ttft_ms is None and piece.text:
                        record.ttft_ms = round((time.perf_counter() - started) * 1000, 3)
                    if piece.finish_reason:
                        call.finish_reason = piece.finish_reason
                        if piece.finish_reason == "cancelled":
                            status = "cancelled"
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except BaseException as exc:  # handed to the request; the engine stays usable
                status, error = "error", f"{exc.__class__.__name__}: {exc}"
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                if cancel.is_set() and status == "ok" and call.finish_reason not in ("stop", "length"):
                    status = "cancelled"
                self._finish(loaded, record, counts, started, status, error, loop, metered=not refused)
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
        metered: bool = True,
    ) -> None:
        record.prompt_tokens = counts.prompt_tokens
        record.completion_tokens = counts.completion_tokens
        record.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        record.status = status
        record.error = error
        if metered:
            self.usage.record(record)
        self._count(record)
        loop.call_soon_threadsafe(self.manager.release, loaded)

    def _count(self, record: UsageRecord) -> None:
        """Count a finished call in the metrics; a metrics failure never fails the call."""
        if self.metrics is None:
            return
        try:
            self.metrics.record(record)
        except Exception:  # counted or not, the call has ended as it did
            pass

    async def embed(self, caller: Identity, spec: ModelSpec, texts: list[str]) -> Embedding:
        started = time.perf_counter()
        spec = self._engine_spec(caller, spec)
        record = self._record(caller, spec, "embedding", stream=False)
        loaded = await self.manager.acquire(spec)
        await self.manager.slot(loaded)
        refused = False
        try:
            if self.reservation is not None:
                # Each input is at most its bytes plus a few special tokens; an embedding has no answer.
                bound = sum(len(t.encode()) + 4 for t in texts)
                try:
                    await asyncio.to_thread(
                        self.reservation, caller, spec, CallBound(record.id, "embedding", bound, False, 0)
                    )
                except Exception:  # refused (not cancelled: then the hold may exist, and billing frees it)
                    refused = True
                    raise
            result = await asyncio.to_thread(loaded.backend.embed, texts)
            record.prompt_tokens = result.prompt_tokens
        except BaseException as exc:
            record.status, record.error = "error", f"{exc.__class__.__name__}: {exc}"
            raise
        finally:
            self.manager.release(loaded)
            record.latency_ms = round((time.perf_counter() - started) * 1000, 3)
            if not refused:
                self.usage.record(record)
            self._count(record)
        return result

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=False)
        self.usage.close()
        self.manager.unload_all()
