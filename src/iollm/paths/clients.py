"""Where a workflow's model calls go: any OpenAI-compatible endpoint (the node's runtime by default),
through a persistent call cache so an identical call is paid for once across all candidates of a search.

A call's identity is (model commit, messages, sampling parameters including the seed): with seeded
sampling the same key always yields the same text, so replaying it from the cache is exact. A search
calls each model one request at a time (``SerialPerModel``), after loading every model (``warm_up``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from ..errors import IollmError, error_from_json
from ..store import SqlitePerThread


@dataclass
class CallResult:
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached: bool = False


class ModelClient(Protocol):
    async def chat(
        self, model: str, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> CallResult: ...


class OpenAIClient:
    """Chat completions over HTTP against the node (or any OpenAI-compatible server)."""

    def __init__(
        self, base_url: str, api_key: str | None = None, concurrency: int = 8, timeout: float = 600
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10),
            limits=httpx.Limits(max_connections=concurrency * 2),
        )
        self.gate = asyncio.Semaphore(concurrency)
        self._revisions: dict[str, str] = {}

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        body = {"model": model, "messages": messages, **{k: v for k, v in params.items() if v is not None}}
        async with self.gate:
            started = time.perf_counter()
            try:
                reply = await self.http.post(f"{self.base_url}/chat/completions", json=body)
            except httpx.TransportError as exc:
                raise IollmError(f"cannot reach {self.base_url}: {exc.__class__.__name__}") from exc
            seconds = time.perf_counter() - started
        if reply.status_code >= 400:
            raise error_from_json(reply.status_code, reply.json())
        data = reply.json()
        usage = data.get("usage") or {}
        # The cache key's revision comes from revision() (the full commit) only: taking it from
        # system_fingerprint here would change the key of the same call after a model's first call.
        return CallResult(
            model,
            data["choices"][0]["message"]["content"] or "",
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
            seconds,
        )

    async def revision(self, model: str) -> str:
        """The commit behind a model id (so the cache never mixes two versions of a model)."""
        if model not in self._revisions:
            reply = await self.http.get(f"{self.base_url}/models/{model}")
            self._revisions[model] = reply.json().get("root", model) if reply.status_code == 200 else model
        return self._revisions[model]

    async def close(self) -> None:
        await self.http.aclose()


class SerialPerModel:
    """One call per model at a time: the node runs one generation per loaded model anyway, and queueing
    there would be timed as compute seconds (and priced)."""

    def __init__(self, inner: ModelClient) -> None:
        self.inner = inner
        self._gates: dict[str, asyncio.Semaphore] = {}

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        gate = self._gates.setdefault(model, asyncio.Semaphore(1))
        async with gate:
            return await self.inner.chat(model, messages, params)

    async def revision(self, model: str) -> str:
        revision = getattr(self.inner, "revision", None)
        return await revision(model) if revision is not None else model


class CallCache:
    """SQLite cache of model calls, shared by processes and runs (``HOME/cache/calls.sqlite``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = SqlitePerThread(path, synchronous=None)
        self._db().execute(
            "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, model TEXT, text TEXT, "
            "prompt_tokens INTEGER, completion_tokens INTEGER, seconds REAL, created REAL)"
        )

    @staticmethod
    def key(revision: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        body = json.dumps([revision, messages, params], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def get(self, key: str) -> CallResult | None:
        row = (
            self._db()
            .execute(
                "SELECT model, text, prompt_tokens, completion_tokens, seconds FROM calls WHERE key = ?",
                (key,),
            )
            .fetchone()
        )
        return CallResult(*row, cached=True) if row else None

    def put(self, key: str, result: CallResult) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                result.model,
                result.text,
                result.prompt_tokens,
                result.completion_tokens,
                result.seconds,
                time.time(),
            ),
        )


class CachedClient:
    """Wraps a client: a cached call is free and instant; concurrent identical calls are made once."""

    def __init__(self, inner: ModelClient, cache: CallCache) -> None:
        self.inner = inner
        self.cache = cache
        self.calls_made = 0
        self.calls_cached = 0
        self._inflight: dict[str, asyncio.Future[CallResult]] = {}

    async def _revision(self, model: str) -> str:
        revision = getattr(self.inner, "revision", None)
        return await revision(model) if revision is not None else model

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        key = CallCache.key(await self._revision(model), messages, params)
        hit = self.cache.get(key)
        if hit is not None:
            self.calls_cached += 1
            return hit
        pending = self._inflight.get(key)
        if pending is not None:
            self.calls_cached += 1
            result = await asyncio.shield(pending)
            return CallResult(**{**result.__dict__, "cached": True})
        future: asyncio.Future[CallResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self.inner.chat(model, messages, params)
            self.cache.put(key, result)
            self.calls_made += 1
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            self._inflight.pop(key, None)


class RecordedClient:
    """Replays recorded answers: ``responses(model, prompt_text, params) -> text``. For fast, deterministic
    tests of search logic; token counts are word counts."""

    def __init__(self, responses, seconds_per_token: float = 0.0) -> None:
        self.responses = responses
        self.seconds_per_token = seconds_per_token
        self.calls = 0

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        self.calls += 1
        prompt = messages[-1]["content"]
        text = self.responses(model, prompt, params)
        completion = max(1, len(text.split()))
        return CallResult(model, text, len(prompt.split()), completion, completion * self.seconds_per_token)


async def warm_up(client: ModelClient, models: Sequence[str]) -> None:
    """Load every model with a one-token call (not cached) so no model's load time is timed, and priced,
    as the compute seconds of the first cached call."""
    for model in models:
        await client.chat(model, [{"role": "user", "content": "Hi"}], {"max_tokens": 1, "temperature": 0.0})


def open_client(
    openai_url: str, token: str | None, cache_path: Path | None, concurrency: int = 4
) -> tuple[CachedClient | ModelClient, OpenAIClient]:
    """The search's client: per-model serial calls to ``openai_url`` behind the persistent call cache."""
    inner = OpenAIClient(openai_url, token, concurrency=concurrency)
    serial = SerialPerModel(inner)
    if cache_path is None:
        return serial, inner
    return CachedClient(serial, CallCache(cache_path)), inner
