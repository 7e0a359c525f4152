"""Models run on the provider's own hardware: GGUF weights pulled from the node (verified, resumable,
cached on the worker), loaded into llama.cpp once per worker process, called by one unit at a time.

This is what makes a provider's compute real: the node only hands out work and checks results."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ..protocol import LocalCache, NodeClient, pull
from ..runtime.backends import ChatMessage, Counts, GenerationParams
from ..runtime.backends.llamacpp import LlamaCppBackend
from .units import UnitContext

_load_lock = threading.Lock()


def pull_model(ctx: UnitContext, repo: str, commit: str) -> Path:
    """The repository's GGUF at ``commit``, pulled into the worker's cache (a no-op when present)."""
    destination = ctx.cache_dir / "models" / commit
    marker = destination / ".complete"
    if not marker.exists():
        with NodeClient(ctx.node_url, ctx.token) as client:
            pull(
                [client],
                "model",
                repo,
                commit,
                LocalCache(ctx.cache_dir / "cache"),
                destination,
                include=lambda p: p.endswith(".gguf"),
                link=True,  # read only: share the cache's verified blob, no second copy of the model
            )
        marker.touch()
    ggufs = sorted(destination.glob("**/*.gguf"), key=lambda p: -p.stat().st_size)
    if not ggufs:
        raise RuntimeError(f"{repo}@{commit[:12]} has no GGUF file to run on a provider")
    return ggufs[0]


def engine(
    ctx: UnitContext, repo: str, commit: str, n_ctx: int = 2048
) -> tuple[LlamaCppBackend, threading.Lock]:
    """One engine per model commit per worker process, with a lock so units take turns."""
    key = f"engine:{commit}"
    with _load_lock:
        if key not in ctx.state:
            path = pull_model(ctx, repo, commit)
            ctx.state[key] = (LlamaCppBackend(path, n_ctx=n_ctx, n_threads=ctx.cpus), threading.Lock())
        return ctx.state[key]


def generation_params(params: dict[str, Any]) -> GenerationParams:
    out = GenerationParams()
    for name in ("temperature", "top_p", "top_k", "min_p", "seed", "max_tokens"):
        if params.get(name) is not None:
            setattr(out, name, params[name])
    if params.get("stop"):
        out.stop = [params["stop"]] if isinstance(params["stop"], str) else list(params["stop"])
    return out


def chat_once(
    ctx: UnitContext, repo: str, commit: str, messages: list[dict[str, str]], params: dict[str, Any]
):
    """One chat call on this worker: (text, prompt tokens, completion tokens, seconds)."""
    backend, lock = engine(ctx, repo, commit)
    counts = Counts()
    chat = [ChatMessage(m["role"], m["content"]) for m in messages]
    with lock:
        started = time.perf_counter()
        text = "".join(
            p.text for p in backend.chat(chat, generation_params(params), counts, threading.Event())
        )
        seconds = time.perf_counter() - started
    return text, counts.prompt_tokens, counts.completion_tokens, seconds
