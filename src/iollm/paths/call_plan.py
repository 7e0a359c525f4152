"""The model calls a candidate will make, named before any is made: what the call cache will pay for a
space (``projected_calls``) and the most one task can cost a candidate (``calls_per_task``)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .candidate import Candidate
from .graph import parse_graph
from .template_texts import SAMPLE_TEMPERATURE


def _params(
    node: dict[str, Any], seed: int, offset: int = 0, temperature: float | None = None
) -> dict[str, Any]:
    """The executor's parameter rules (see ``Executor._params``), to name calls before making them."""
    params = dict(node.get("params") or {})
    params.setdefault("temperature", 0.0 if temperature is None else temperature)
    if temperature is not None:
        params["temperature"] = temperature
    params.setdefault("max_tokens", 256)
    params["seed"] = int(params.get("seed", seed)) + offset
    return params


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def call_signatures(graph: dict[str, Any], seed: int = 0) -> list[str]:
    """Symbolic identities of every model call the graph can make on one task (an upper bound: every
    cascade stage and every branch counted). Two graphs that would make the same call get the same
    signature, so the union over a space is what the call cache will actually pay for."""
    parsed = parse_graph(graph)
    produced: dict[str, str] = {}
    calls: list[str] = []
    for level in parsed.order():
        for node_id in level:
            node = parsed.node(node_id)
            raw = {"kind": node.kind, **node.config}
            upstream = [produced[e.source] for e in parsed.upstream(node_id)]
            prompt = [node.get("prompt") or node.get("role"), node.get("system")]
            if node.kind == "model":
                sig = _key(node.get("model"), prompt, _params(raw, seed), upstream)
                calls.append(sig)
            elif node.kind == "vote":
                temperature = float(node.get("temperature", SAMPLE_TEMPERATURE))
                sigs = [
                    _key(node.get("model"), prompt, _params(raw, seed, i, temperature), upstream)
                    for i in range(int(node.get("k")))
                ]
                calls += sigs
                sig = _key("vote", sigs)
            elif node.kind == "cascade":
                sigs = []
                for model in node.get("models"):
                    sigs.append(_key(model, prompt, _params(raw, seed), upstream))
                    if node.get("check", "agreement") == "agreement":
                        sigs += [
                            _key(model, prompt, _params(raw, seed, i + 1, SAMPLE_TEMPERATURE), upstream)
                            for i in range(int(node.get("samples", 2)) - 1)
                        ]
                calls += sigs
                sig = _key("cascade", sigs)
            else:
                sig = _key(node.kind, raw, upstream)
            produced[node_id] = sig
    return calls


def projected_calls(candidates: list[Candidate], n_tasks: int, seed: int = 0) -> dict[str, int]:
    """Model calls needed to evaluate every candidate on ``n_tasks`` tasks: ``naive`` (each candidate
    pays for its own calls) and ``unique`` (identical calls made once, what the call cache pays)."""
    per_task = 0
    unique: set[str] = set()
    for candidate in candidates:
        signatures = call_signatures(candidate.graph, seed)
        per_task += len(signatures)
        unique.update(signatures)
    return {"per_task": per_task, "naive": per_task * n_tasks, "unique": len(unique) * n_tasks}


def calls_per_task(candidate: Candidate, seed: int = 0) -> int:
    """Upper bound of the model calls one task costs this candidate."""
    return len(call_signatures(candidate.graph, seed))
