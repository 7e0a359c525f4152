"""What the editor's palette offers: every node kind with a starting config, every role with its
built-in prompt, the models this node serves and the built-in suites, in one request."""

from __future__ import annotations

from typing import Any

from ..hub import Hub, Identity
from ..paths.catalog import list_suites
from ..paths.graph import NODE_KINDS, ROLES
from ..paths.roles import role_prompt
from .runs import served_models

KIND_HELP = {
    "model": "One call to a model, with a prompt or a role template.",
    "vote": "k samples of one model; the most common final answer wins (self-consistency).",
    "cascade": "Models cheapest first; escalate when the answer fails a check.",
    "route": "Pick a branch by matching rules (regular expressions) against the input.",
    "python": "Run Python in the sandbox; {{node}} inserts an upstream output, stdout is the output.",
    "output": "The workflow's answer: the first upstream node that produced one.",
}


def default_config(kind: str, model: str | None) -> dict[str, Any]:
    """A config that passes validation as soon as its inputs are connected."""
    if kind == "model":
        return {"model": model or "", "prompt": "{{input}}", "params": {"max_tokens": 64}}
    if kind == "vote":
        return {
            "model": model or "",
            "k": 3,
            "mode": "majority",
            "prompt": "{{input}}",
            "params": {"max_tokens": 64},
        }
    if kind == "cascade":
        return {"models": [model or "", model or ""], "check": "agreement", "prompt": "{{input}}"}
    if kind == "route":
        return {"on": "{{input}}", "rules": [{"branch": "code", "pattern": "def |python"}], "default": "text"}
    if kind == "python":
        return {"code": "print(len('''{{input}}'''))"}
    return {}


def catalog(hub: Hub, caller: Identity) -> dict[str, Any]:
    models = sorted(served_models(hub, caller))
    first = next((m for m in models if not m.startswith("path/")), models[0] if models else None)
    return {
        "kinds": [{"kind": k, "help": KIND_HELP[k], "config": default_config(k, first)} for k in NODE_KINDS],
        "roles": [
            {
                "role": r,
                "prompt": role_prompt(r, ["upstream"]),
                "config": {"model": first or "", "role": r, "params": {"max_tokens": 64}},
            }
            for r in ROLES
        ],
        "models": models,
        "suites": list_suites(),
    }
