"""Paths served as models: ``path/NAME`` answers on /v1/chat/completions, /api/chat and /api/generate
like any model (the node registers ``PathModels`` as the runtime's virtual models of namespace ``path``).

Publishing stores the workflow in the hub as the model repository ``path/NAME`` (versioned, mirrored
and exported like any repository). Serving runs the graph in-process, calling each model through the
node's runtime, so every inner call is metered against the caller as a normal call, and the path
call itself gets one usage record (backend ``path``) with the tokens of all its calls. A path may call
another path, but never itself, however indirectly.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from ..errors import Forbidden, ProtocolError
from ..hub import Hub, Identity
from ..protocol import FileEntry, check_name
from ..runtime import Call, ChatMessage, ModelNotFound, ModelSpec, Runtime
from ..runtime.backends import Piece
from .clients import CallResult, Embedded
from .executor import Executor
from .graph import Graph, GraphError, parse_graph
from .pricing import PriceBook

NAMESPACE = "path"
PREFIX = NAMESPACE + "/"
WORKFLOW_FILE = "workflow.json"
# The paths running in this task, outermost first (tasks the executor starts inherit it).
_RUNNING: ContextVar[tuple[str, ...]] = ContextVar("iollm_running_paths", default=())


class RuntimeClient:
    """A ModelClient that calls the node's own runtime in-process (no HTTP), as ``caller``."""

    stream = False  # what the calls' usage records say

    def __init__(self, runtime: Runtime, caller: Identity) -> None:
        self.runtime = runtime
        self.caller = caller

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        started = time.perf_counter()
        conversation = [ChatMessage(m["role"], m["content"]) for m in messages]
        sampling = {k: v for k, v in params.items() if k != "logprobs"}
        wants = bool(params.get("logprobs")) and self.runtime.virtual_for(model) is None
        call = self.runtime.chat(
            self.caller, model, conversation, sampling, self.stream, logprobs=0 if wants else None
        )
        scored: list[tuple[str, float]] = []
        if wants and call.pieces is not None:
            call.pieces = _tap(call.pieces, scored)
        text = await self.answer(model, call)
        return CallResult(
            model,
            text,
            call.counts.prompt_tokens,
            call.counts.completion_tokens,
            time.perf_counter() - started,
            logprobs=scored if wants else None,
        )

    async def answer(self, model: str, call: Call) -> str:
        """Run ``call`` to its end and return its text (a subclass may show the pieces as they come)."""
        return await call.text()

    async def embed(self, model: str, texts: list[str]) -> Embedded:
        """A learned router's features, from the runtime's own embeddings (metered to ``caller``)."""
        started = time.perf_counter()
        spec = self.runtime.resolve(self.caller, model)
        result = await self.runtime.embed(self.caller, spec, texts)
        return Embedded(model, result.vectors, result.prompt_tokens, time.perf_counter() - started)


async def _tap(pieces: AsyncIterator[Piece], scored: list[tuple[str, float]]) -> AsyncIterator[Piece]:
    """Pass pieces through, keeping each token's log-probability (a logprob cascade's confidence)."""
    async for piece in pieces:
        scored.extend((e.token, e.logprob) for e in piece.logprobs or () if e.logprob is not None)
        yield piece


class PathModels:
    """Publishes workflows as ``path/NAME`` and answers chat requests addressed to them."""

    def __init__(self, hub: Hub, runtime: Runtime) -> None:
        self.hub = hub
        self.runtime = runtime

    def publish(self, caller: Identity, name: str, graph_json: dict[str, Any]) -> dict[str, Any]:
        caller.require_user()
        check_name(name, "path name")
        try:
            graph = parse_graph(graph_json)
        except GraphError as exc:
            raise ProtocolError(f"cannot publish: {exc}") from exc
        repo_id = PREFIX + name
        repo = self.hub.ensure_repo("model", repo_id)
        head = self.hub.head(repo)
        if head:
            designer = self.hub.manifest(head).card.get("designer")
            if designer and designer != caller.name and not caller.is_admin:
                raise Forbidden(f"{repo_id} belongs to {designer}; publish under another name")
        data = json.dumps(graph.to_json(), indent=2, sort_keys=True).encode()
        digest, _ = self.hub.store.ingest_bytes(data)
        entry = FileEntry.from_digest(WORKFLOW_FILE, digest)
        publisher = replace(caller, scope="write", orgs={**caller.orgs, "path": "write"})
        card = {
            "kind": "path",
            "designer": caller.name,
            "graph_hash": graph.canonical_hash(),
            "models": graph.models(),
            "description": graph.description,
        }
        manifest, _ = self.hub.commit(
            publisher, "model", repo_id, [entry], message=f"Publish path {name}", card=card, create=False
        )
        self.runtime.resolver.forget()
        return {"model": repo_id, "commit": manifest.commit_id, "graph_hash": graph.canonical_hash()}

    def resolve(self, caller: Identity, model: str) -> ModelSpec:
        """The published version ``model`` (``path/NAME[@revision]``) names, as a spec of backend ``path``."""
        name, _, revision = model.partition("@")
        try:
            repo = self.hub.get_repo(caller, "model", name)
            commit = self.hub.resolve(repo, revision or None)
        except Exception as exc:
            raise ModelNotFound(
                f"path {model!r} does not exist; publish one with `iollm path publish`"
            ) from exc
        if self.hub.manifest(commit).file(WORKFLOW_FILE) is None:
            raise ModelNotFound(f"{model!r} is not a published path")
        return ModelSpec(name, name, commit, NAMESPACE)

    def graph(self, spec: ModelSpec) -> Graph:
        entry = self.hub.manifest(spec.commit).file(WORKFLOW_FILE)
        if entry is None:
            raise ModelNotFound(f"{spec.model_id!r} is not a published path")
        return parse_graph(self.runtime.resolver.read_file(entry).decode())

    def list_models(self, caller: Identity) -> list[dict[str, Any]]:
        return [
            {"id": r.repo_id, "object": "model", "created": 0, "owned_by": "path"}
            for r in self.hub.list_repos(caller, "model", namespace="path")
        ]

    def chat(
        self,
        caller: Identity,
        spec: ModelSpec,
        messages: list[ChatMessage],
        params: dict[str, Any],
        stream: bool,
    ) -> Call:
        """Run the path on the conversation's last user message: the call yields its answer as one piece,
        and its usage record has the exact token totals of all its inner calls."""
        call = self.runtime.new_call(caller, spec, "chat", stream)
        call.pieces = self._answer(caller, call, messages, int(params.get("seed") or 0))
        return call

    async def _answer(
        self, caller: Identity, call: Call, messages: list[ChatMessage], seed: int
    ) -> AsyncIterator[Piece]:
        user = [m.content for m in messages if m.role == "user"]
        if not user:
            raise ProtocolError("a path needs a user message as its input")
        model, running = call.spec.model_id, _RUNNING.get()
        if model in running:
            raise ProtocolError(f"{model} calls itself: {' -> '.join((*running, model))}")
        graph = self.graph(call.spec)
        started = time.perf_counter()
        executor = Executor(RuntimeClient(self.runtime, caller), PriceBook(), seed=seed)
        inside = _RUNNING.set((*running, model))
        try:
            result = await executor.run(graph, user[-1])
        finally:
            _RUNNING.reset(inside)
        failed = [n for n in result.nodes.values() if n.status == "error"]
        record = call.record
        record.prompt_tokens = call.counts.prompt_tokens = sum(c.prompt_tokens for c in result.calls)
        record.completion_tokens = call.counts.completion_tokens = sum(
            c.completion_tokens for c in result.calls
        )
        record.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        record.status = "error" if failed and not result.answer else "ok"
        record.error = "; ".join(f"{n.id}: {n.error}" for n in failed) or None
        self.runtime.usage.record(record)
        yield Piece(result.answer, finish_reason="stop")
