"""Paths served as models: ``path/NAME`` answers on /v1/chat/completions like any model.

Publishing stores the workflow in the hub as the model repository ``path/NAME`` (versioned, mirrored
and exported like any repository). Serving runs the graph in-process, calling each model through the
node's runtime, so every inner call is metered against the caller as a normal call, and the path
call itself gets one usage record (backend ``path``) with the tokens of all its calls.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from ..hub import Hub, Identity
from ..protocol import FileEntry, Forbidden, ProtocolError, check_name
from ..runtime import ChatMessage, ModelNotFound, Runtime, params_for
from ..runtime.service import CallInfo
from ..runtime.usage import UsageRecord
from .clients import CallResult
from .executor import Executor
from .graph import Graph, GraphError, parse_graph
from .pricing import PriceBook

PREFIX = "path/"
WORKFLOW_FILE = "workflow.json"


class RuntimeClient:
    """A ModelClient that calls the node's own runtime in-process (no HTTP), as ``caller``."""

    def __init__(self, runtime: Runtime, caller: Identity) -> None:
        self.runtime = runtime
        self.caller = caller

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        started = time.perf_counter()
        spec = self.runtime.resolve(self.caller, model)
        chat = self.runtime.messages_for(spec, [ChatMessage(m["role"], m["content"]) for m in messages])
        generation = params_for(spec, params)
        info: list[CallInfo] = []
        pieces = self.runtime.generate(
            self.caller, spec, "chat", lambda b, c, x: b.chat(chat, generation, c, x), False, info
        )
        text = "".join([p.text async for p in pieces])
        counts = info[0].counts
        return CallResult(
            model, text, counts.prompt_tokens, counts.completion_tokens, time.perf_counter() - started
        )


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
        head = self.hub.refs(repo)["branches"].get("main")
        if head:
            designer = self.hub.manifest(head).card.get("designer")
            if designer and designer != caller.name and not caller.is_admin:
                raise Forbidden(f"{repo_id} belongs to {designer}; publish under another name")
        data = json.dumps(graph.to_json(), indent=2, sort_keys=True).encode()
        digest, _ = self.hub.store.ingest_bytes(data)
        entry = FileEntry(
            path=WORKFLOW_FILE,
            size=digest.size,
            sha256=digest.sha256,
            chunks=[(c.digest.hex(), c.length) for c in digest.chunks],
        )
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

    def graph(self, caller: Identity, model: str) -> tuple[Graph, str]:
        name, _, revision = model.partition("@")
        try:
            repo = self.hub.get_repo(caller, "model", name)
            commit = self.hub.resolve(repo, revision or None)
        except Exception as exc:
            raise ModelNotFound(
                f"path {model!r} does not exist; publish one with `iollm path publish`"
            ) from exc
        entry = self.hub.manifest(commit).file(WORKFLOW_FILE)
        if entry is None:
            raise ModelNotFound(f"{model!r} is not a published path")
        return parse_graph(self.runtime.resolver.read_file(entry).decode()), commit

    def owns(self, model: str) -> bool:
        return model.startswith(PREFIX)

    def list_models(self, caller: Identity) -> list[dict[str, Any]]:
        return [
            {"id": r.repo_id, "object": "model", "created": 0, "owned_by": "path"}
            for r in self.hub.list_repos(caller, "model", namespace="path")
        ]

    async def chat(
        self, caller: Identity, model: str, messages: list[ChatMessage], request: dict[str, Any]
    ) -> dict:
        """Run the path on the conversation's last user message; returns text and exact token totals."""
        self.runtime.caller_name(caller)
        graph, commit = self.graph(caller, model)
        user = [m.content for m in messages if m.role == "user"]
        if not user:
            raise ProtocolError("a path needs a user message as its input")
        started = time.perf_counter()
        executor = Executor(
            RuntimeClient(self.runtime, caller), PriceBook(), seed=int(request.get("seed") or 0)
        )
        result = await executor.run(graph, user[-1])
        prompt = sum(c.prompt_tokens for c in result.calls)
        completion = sum(c.completion_tokens for c in result.calls)
        failed = [n for n in result.nodes.values() if n.status == "error"]
        record = UsageRecord(
            caller=self.runtime.caller_name(caller),
            model=model.partition("@")[0],
            repo=model.partition("@")[0],
            commit=commit,
            backend="path",
            kind="chat",
            stream=bool(request.get("stream")),
            prompt_tokens=prompt,
            completion_tokens=completion,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            status="error" if failed and not result.answer else "ok",
            error="; ".join(f"{n.id}: {n.error}" for n in failed) or None,
        )
        self.runtime.usage.record(record)
        return {
            "id": record.id,
            "text": result.answer,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "commit": commit,
            "run": result.as_dict(),
        }
