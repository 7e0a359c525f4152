"""Runs a workflow graph on one input: independent nodes in parallel, each node's calls, tokens, cost and
latency recorded, so the editor can show per-node badges and the search can price every path.

Latency is the critical path (parallel branches overlap); compute seconds are the sum of all calls.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .checkers import answer_candidates, extract_code, extract_number, normalize
from .clients import CallResult, ModelClient
from .confidence import confidence
from .graph import Graph, Node, render
from .pricing import PriceBook
from .roles import role_prompt
from .routers import router_for
from .sandbox import Sandbox
from .template_texts import PROGRAM_RUNNER

# The id of the node whose calls are being made: a client can read it to attribute streamed tokens to a
# node (each node runs in its own task, so parallel nodes never see each other's value).
current_node: ContextVar[str | None] = ContextVar("current_node", default=None)
EventSink = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class NodeTrace:
    id: str
    kind: str
    status: str = "pending"  # ok | skipped | error
    output: str = ""
    calls: list[CallResult] = field(default_factory=list)
    seconds: float = 0.0
    finished_at: float = 0.0
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.calls)

    def cost(self, prices: PriceBook) -> int:
        return sum(prices.cost(c) for c in self.calls)

    def as_dict(self, prices: PriceBook) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "output": self.output,
            "calls": len(self.calls),
            "cached_calls": sum(1 for c in self.calls if c.cached),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost(prices),
            "seconds": round(self.seconds, 4),
            "error": self.error,
            **({"detail": self.detail} if self.detail else {}),
        }


@dataclass
class RunResult:
    answer: str
    nodes: dict[str, NodeTrace]
    prices: PriceBook

    @property
    def calls(self) -> list[CallResult]:
        return [c for n in self.nodes.values() for c in n.calls]

    @property
    def cost(self) -> int:
        """Micro-credits: tokens at each model's price plus compute seconds."""
        return sum(n.cost(self.prices) for n in self.nodes.values())

    @property
    def latency(self) -> float:
        return max((n.finished_at for n in self.nodes.values()), default=0.0)

    @property
    def compute_seconds(self) -> float:
        return sum(c.seconds for c in self.calls)

    def as_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "prompt_tokens": sum(c.prompt_tokens for c in self.calls),
            "completion_tokens": sum(c.completion_tokens for c in self.calls),
            "calls": len(self.calls),
            "cost": self.cost,
            "latency_s": round(self.latency, 4),
            "compute_s": round(self.compute_seconds, 4),
            "nodes": [n.as_dict(self.prices) for n in self.nodes.values()],
        }


def final_answer(text: str) -> str:
    """The part of an output that votes and agreement checks compare."""
    number = extract_number(text)
    if number is not None:
        return number
    candidates = answer_candidates(text)
    return normalize(candidates[0]) if candidates else normalize(text)


class Executor:
    def __init__(
        self,
        client: ModelClient,
        prices: PriceBook | None = None,
        sandbox: Sandbox | None = None,
        seed: int = 0,
    ) -> None:
        self.client = client
        self.prices = prices or PriceBook()
        self.sandbox = sandbox or Sandbox(timeout_s=10)
        self.seed = seed

    async def run(
        self,
        graph: Graph,
        task_input: str,
        cached: dict[str, str] | None = None,
        until: str | None = None,
        on_event: EventSink | None = None,
    ) -> RunResult:
        """Run ``graph``; ``cached`` node outputs are reused without calls; ``until`` stops after that node.
        ``on_event`` (optional) receives ``node_started``/``node_finished`` events as they happen."""
        traces = {n.id: NodeTrace(n.id, n.kind) for n in graph.nodes}
        values: dict[str, str] = {"input": task_input}
        active_edges: set[tuple[str, str]] = set()
        needed = ancestors(graph, until) if until else None
        start = time.perf_counter()
        for level in graph.order():
            runnable = []
            for node_id in level:
                if needed is not None and node_id not in needed:
                    traces[node_id].status = "skipped"
                    continue
                incoming = graph.upstream(node_id)
                if incoming and not any((e.source, e.target) in active_edges for e in incoming):
                    traces[node_id].status = "skipped"
                    traces[node_id].detail["reason"] = "no active input"
                    continue
                branches = [e for e in incoming if e.branch is not None]
                if branches and not any((e.source, e.target) in active_edges for e in branches):
                    # a branch edge gates its target even when the target also reads other nodes' outputs
                    traces[node_id].status = "skipped"
                    traces[node_id].detail["reason"] = "branch not taken"
                    continue
                runnable.append(graph.node(node_id))
            await asyncio.gather(
                *(
                    self._run_node(graph, node, values, traces, cached or {}, start, on_event)
                    for node in runnable
                )
            )
            for node in runnable:
                trace = traces[node.id]
                for edge in graph.downstream(node.id):
                    if trace.status == "ok" and (node.kind != "route" or edge.branch == trace.output):
                        active_edges.add((edge.source, edge.target))
        output = graph.output
        answer = traces[output.id].output if traces[output.id].status == "ok" else ""
        if until and until != output.id:
            answer = traces[until].output
        return RunResult(answer, traces, self.prices)

    async def _run_node(self, graph, node, values, traces, cached, start, on_event) -> None:
        trace = traces[node.id]
        upstream = [e.source for e in graph.upstream(node.id)]
        began = time.perf_counter()
        current_node.set(node.id)
        if on_event:
            await on_event({"type": "node_started", "node": node.id})
        try:
            if node.id in cached:
                trace.output = cached[node.id]
                trace.detail["from_cache"] = True
            else:
                trace.output = await self._dispatch(node, upstream, values, trace, traces)
            trace.status = "ok"
        except Exception as exc:  # a failing node fails its run, not the whole search
            trace.status, trace.error = "error", f"{exc.__class__.__name__}: {exc}"
        trace.seconds = time.perf_counter() - began
        ready = max((traces[u].finished_at for u in upstream), default=0.0)
        trace.finished_at = ready + (sum(c.seconds for c in trace.calls) if trace.calls else trace.seconds)
        values[node.id] = trace.output
        if on_event:
            await on_event({"type": "node_finished", "node": node.id, "trace": trace.as_dict(self.prices)})

    async def _dispatch(self, node: Node, upstream: list[str], values, trace: NodeTrace, traces) -> str:
        if node.kind == "model":
            return await self._model(node, upstream, values, trace)
        if node.kind == "vote":
            return await self._vote(node, upstream, values, trace)
        if node.kind == "cascade":
            return await self._cascade(node, upstream, values, trace)
        if node.kind == "route":
            return await self._route(node, values, trace)
        if node.kind == "python":
            return await self._python(node, values, trace)
        if node.kind == "output":
            for source in upstream:
                if traces[source].status == "ok" and traces[source].output:
                    return traces[source].output
            return ""
        raise ValueError(f"unknown node kind {node.kind}")

    def _messages(self, node: Node, upstream: list[str], values: dict[str, str]) -> list[dict[str, str]]:
        template = node.get("prompt") or role_prompt(node.get("role", "solver"), upstream)
        messages = []
        if node.get("system"):
            messages.append({"role": "system", "content": render(node.get("system"), values)})
        messages.append({"role": "user", "content": render(template, values)})
        return messages

    def _params(self, node: Node, seed_offset: int = 0, temperature: float | None = None) -> dict[str, Any]:
        params = dict(node.get("params") or {})
        params.setdefault("temperature", 0.0 if temperature is None else temperature)
        if temperature is not None:
            params["temperature"] = temperature
        params.setdefault("max_tokens", 256)
        params["seed"] = int(params.get("seed", self.seed)) + seed_offset
        return params

    async def _call(self, trace: NodeTrace, model: str, messages, params) -> CallResult:
        result = await self.client.chat(model, messages, params)
        trace.calls.append(result)
        return result

    async def _model(self, node: Node, upstream, values, trace) -> str:
        result = await self._call(
            trace, node.get("model"), self._messages(node, upstream, values), self._params(node)
        )
        return result.text

    async def _vote(self, node: Node, upstream, values, trace) -> str:
        messages = self._messages(node, upstream, values)
        temperature = float(node.get("temperature", 0.7))
        results = await asyncio.gather(
            *(
                self._call(trace, node.get("model"), messages, self._params(node, i, temperature))
                for i in range(int(node.get("k")))
            )
        )
        answers = [final_answer(r.text) for r in results]
        winner, votes = Counter(answers).most_common(1)[0]
        trace.detail.update({"votes": votes, "k": len(results), "answer": winner})
        return next(r.text for r, a in zip(results, answers, strict=True) if a == winner)

    async def _accept(
        self,
        node: Node,
        model: str,
        first: CallResult,
        messages,
        trace,
        index: int = 0,
        answer: str | None = None,
    ) -> bool:
        check = node.get("check", "agreement")
        if check == "logprob":
            # no logprobs (an endpoint without them) counts as unsure: escalate rather than trust blindly
            sure = confidence(first.logprobs, str(node.get("metric", "mean")))
            trace.detail.setdefault("confidence", []).append(sure)
            return sure is not None and sure >= float(thresholds(node)[index])
        if check == "format":  # on the stage's answer: a program stage's printout, else the text
            text = first.text if answer is None else answer
            return re.search(str(node.get("pattern", r"\d")), text) is not None
        if check == "python":
            code = extract_code(first.text)
            outcome = await asyncio.to_thread(
                self.sandbox.run_python, code + "\n" + str(node.get("test", ""))
            )
            return outcome.ok
        samples = int(node.get("samples", 2))
        others = await asyncio.gather(
            *(self._call(trace, model, messages, self._params(node, i + 1, 0.7)) for i in range(samples - 1))
        )
        answers = [final_answer(first.text)] + [final_answer(o.text) for o in others]
        agree = sum(1 for a in answers if a == answers[0]) / len(answers)
        return agree >= float(node.get("threshold", 1.0))

    async def _cascade(self, node: Node, upstream, values, trace) -> str:
        """Models cheapest first; each stage's answer is accepted by the node's check, else the next model
        answers. With ``stages``, each stage has its own prompt and parameters, and a ``program`` stage
        answers with what its code prints (a program that fails or prints nothing escalates)."""
        models = list(node.get("models"))
        stages = node.get("stages") or [{} for _ in models]
        for index, (model, stage) in enumerate(zip(models, stages, strict=True)):
            staged = Node(node.id, node.kind, {**node.config, **stage}) if stage else node
            messages = self._messages(staged, upstream, values)
            first = await self._call(trace, model, messages, self._params(staged))
            answer = await self._run_program(first.text, trace) if stage.get("program") else first.text
            last = index == len(models) - 1
            if last or (answer and await self._accept(node, model, first, messages, trace, index, answer)):
                trace.detail.update({"answered_by": model, "escalations": index})
                return answer
        raise AssertionError("unreachable")

    async def _run_program(self, text: str, trace: NodeTrace) -> str:
        """What the code in ``text`` prints, run as the program template's runner does; "" on failure."""
        code = render(PROGRAM_RUNNER, {"program": extract_code(text)})
        outcome = await asyncio.to_thread(self.sandbox.run_python, code)
        trace.detail.setdefault("program_ok", []).append(outcome.ok)
        return outcome.stdout.strip() if outcome.ok else ""

    async def _route(self, node: Node, values: dict[str, str], trace: NodeTrace) -> str:
        subject = render(str(node.get("on", "{{input}}")), values)
        router = router_for(node)
        if router.choose_vector is None:
            return router.choose(node, subject, values)
        embed = getattr(self.client, "embed", None)
        if embed is None:
            raise ValueError(f"the {router.name} router needs embeddings; this client has none")
        embedded = await embed(str(node.get("embed_model")), [subject])
        trace.calls.append(embedded.as_call())  # the router's own cost: priced like any call
        branch = router.choose_vector(node, embedded.vectors[0])
        trace.detail["branch"] = branch
        return branch

    async def _python(self, node: Node, values: dict[str, str], trace: NodeTrace) -> str:
        code_values = {k: extract_code(v) if k != "input" else v for k, v in values.items()}
        code = render(str(node.get("code")), code_values)
        outcome = await asyncio.to_thread(self.sandbox.run_python, code)
        trace.detail.update({"returncode": outcome.returncode, "timed_out": outcome.timed_out})
        if not outcome.ok:
            raise RuntimeError(
                f"python failed: {(outcome.stderr or outcome.killed_reason or '').strip()[-300:]}"
            )
        return outcome.stdout.strip()


def thresholds(node: Node) -> list[float]:
    """A logprob cascade's threshold per escalating stage (one number applies to every stage)."""
    value = node.get("threshold", -1.0)
    stages = len(node.get("models") or []) - 1
    return [float(v) for v in value] if isinstance(value, list) else [float(value)] * stages


def ancestors(graph: Graph, node_id: str) -> set[str]:
    """``node_id`` and every node it depends on (what a run up to that node must compute or reuse)."""
    found = {node_id}
    frontier = [node_id]
    while frontier:
        current = frontier.pop()
        for edge in graph.upstream(current):
            if edge.source not in found:
                found.add(edge.source)
                frontier.append(edge.source)
    return found
