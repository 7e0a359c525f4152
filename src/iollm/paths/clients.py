"""Where a workflow's model calls go: any OpenAI-compatible endpoint (the node's runtime by default),
through a persistent call cache so an identical call is paid for once across all candidates of a search.

A call's identity is (model content digest, messages, sampling parameters including the seed): with seeded
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
    # (token, logprob) of the completion when the call asked for ``logprobs``: a cascade's confidence
    logprobs: list[tuple[str, float]] | None = None


@dataclass
class Embedded:
    """Vectors of some texts from one model's ``/v1/embeddings``: a learned router's features."""

    model: str
    vectors: list[list[float]]
    prompt_tokens: int
    seconds: float
    cached: bool = False

    def as_call(self) -> CallResult:
        """The embedding as a priced call (prompt tokens and seconds, no completion)."""
        return CallResult(self.model, "", self.prompt_tokens, 0, self.seconds, self.cached)


class ModelClient(Protocol):
    async def chat(
        self, model: str, messages: list[dict[str, str]], params: dict[str, Any]
    ) -> CallResult: ...


def _token_logprobs(choice: dict[str, Any]) -> list[tuple[str, float]] | None:
    """OpenAI chat ``logprobs.content`` as (token, logprob) pairs; None when the server sent none."""
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    return [(str(e.get("token", "")), float(e["logprob"])) for e in content if e.get("logprob") is not None]


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

    async def _post(self, route: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST ``body`` to ``route`` within the concurrency gate: the JSON answer and the seconds it took
        (an error answer raised as the node's own error)."""
        async with self.gate:
            started = time.perf_counter()
            try:
                reply = await self.http.post(f"{self.base_url}/{route}", json=body)
            except httpx.TransportError as exc:
                raise IollmError(f"cannot reach {self.base_url}: {exc.__class__.__name__}") from exc
            seconds = time.perf_counter() - started
        if reply.status_code >= 400:
            raise error_from_json(reply.status_code, reply.json())
        return reply.json(), seconds

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        body = {"model": model, "messages": messages, **{k: v for k, v in params.items() if v is not None}}
        data, seconds = await self._post("chat/completions", body)
        usage = data.get("usage") or {}
        # The cache key's revision comes from revision() (the full commit) only: taking it from
        # system_fingerprint here would change the key of the same call after a model's first call.
        return CallResult(
            model,
            data["choices"][0]["message"]["content"] or "",
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
            seconds,
            logprobs=_token_logprobs(data["choices"][0]),
        )

    async def embed(self, model: str, texts: list[str]) -> Embedded:
        """``/v1/embeddings`` of ``texts`` with ``model``: the node's own vectors, no outside service."""
        data, seconds = await self._post("embeddings", {"model": model, "input": texts})
        rows = sorted(data["data"], key=lambda r: r["index"])
        tokens = (data.get("usage") or {}).get("prompt_tokens", 0)
        return Embedded(model, [list(map(float, r["embedding"])) for r in rows], tokens, seconds)

    async def revision(self, model: str) -> str:
        """What the model's answers depend on, so the cache never mixes two versions of a model: the
        node's content digest (weights and settings, the same when the model is published again under a
        new commit), else the commit (``root``) other OpenAI-compatible servers report, else the id."""
        if model not in self._revisions:
            reply = await self.http.get(f"{self.base_url}/models/{model}")
            card = reply.json() if reply.status_code == 200 else {}
            self._revisions[model] = card.get("content_digest") or card.get("root") or model
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

    async def embed(self, model: str, texts: list[str]) -> Embedded:
        gate = self._gates.setdefault(model, asyncio.Semaphore(1))
        async with gate:
            return await self.inner.embed(model, texts)  # type: ignore[attr-defined]

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
        columns = {row[1] for row in self._db().execute("PRAGMA table_info(calls)")}
        if "logprobs" not in columns:  # caches written before calls kept their token logprobs
            self._db().execute("ALTER TABLE calls ADD COLUMN logprobs TEXT")
        self._db().execute(
            "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, model TEXT, vector TEXT, "
            "prompt_tokens INTEGER, seconds REAL)"
        )

    @staticmethod
    def key(revision: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        body = json.dumps([revision, messages, params], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def get(self, key: str) -> CallResult | None:
        row = (
            self._db()
            .execute(
                "SELECT model, text, prompt_tokens, completion_tokens, seconds, logprobs FROM calls "
                "WHERE key = ?",
                (key,),
            )
            .fetchone()
        )
        if not row:
            return None
        logprobs = [(str(t), float(v)) for t, v in json.loads(row[5])] if row[5] else None
        return CallResult(*row[:5], cached=True, logprobs=logprobs)

    def put(self, key: str, result: CallResult) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO calls (key, model, text, prompt_tokens, completion_tokens, seconds, "
            "created, logprobs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                result.model,
                result.text,
                result.prompt_tokens,
                result.completion_tokens,
                result.seconds,
                time.time(),
                json.dumps(result.logprobs) if result.logprobs is not None else None,
            ),
        )

    def get_vector(self, key: str) -> Embedded | None:
        row = (
            self._db()
            .execute("SELECT model, vector, prompt_tokens, seconds FROM embeddings WHERE key = ?", (key,))
            .fetchone()
        )
        return Embedded(row[0], [json.loads(row[1])], row[2], row[3], cached=True) if row else None

    def put_vector(self, key: str, model: str, vector: list[float], tokens: int, seconds: float) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)",
            (key, model, json.dumps(vector), tokens, seconds),
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

    async def embed(self, model: str, texts: list[str]) -> Embedded:
        """Embeddings text by text through the cache (a text's vector is computed once per model version);
        the result's tokens and seconds are those of the texts actually computed now."""
        revision = await self._revision(model)
        key_of = {t: CallCache.key(revision, [{"role": "embed", "content": t}], {}) for t in texts}
        keys = [key_of[t] for t in texts]
        found = {k: self.cache.get_vector(k) for k in keys}
        todo = [t for t, k in key_of.items() if found[k] is None]
        if todo:
            fresh = await self.inner.embed(model, todo)  # type: ignore[attr-defined]
            share = fresh.prompt_tokens / len(todo)
            for text, vector in zip(todo, fresh.vectors, strict=True):
                key = key_of[text]
                self.cache.put_vector(key, model, vector, round(share), fresh.seconds / len(todo))
                found[key] = Embedded(model, [vector], round(share), fresh.seconds / len(todo))
        hits = [found[k] for k in keys]
        # what the vectors cost when computed (a replayed call is priced as made, like a cached chat)
        tokens = sum(h.prompt_tokens for h in hits if h is not None)
        seconds = sum(h.seconds for h in hits if h is not None)
        vectors = [h.vectors[0] for h in hits if h is not None]
        return Embedded(model, vectors, tokens, seconds, cached=not todo)


class RecordedClient:
    """Replays recorded answers: ``responses(model, prompt_text, params) -> text``. For fast, deterministic
    tests of search logic; token counts are word counts."""

    def __init__(self, responses, seconds_per_token: float = 0.0, embeddings=None) -> None:
        self.responses = responses  # -> text, or (text, [(token, logprob), ...]) when logprobs are recorded
        self.seconds_per_token = seconds_per_token
        self.embeddings = embeddings  # (model, text) -> vector, for learned routers
        self.calls = 0

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        self.calls += 1
        prompt = messages[-1]["content"]
        reply = self.responses(model, prompt, params)
        text, logprobs = reply if isinstance(reply, tuple) else (reply, None)
        completion = max(1, len(text.split()))
        return CallResult(
            model,
            text,
            len(prompt.split()),
            completion,
            completion * self.seconds_per_token,
            logprobs=logprobs if params.get("logprobs") else None,
        )

    async def embed(self, model: str, texts: list[str]) -> Embedded:
        if self.embeddings is None:
            raise IollmError("this recorded client has no embeddings")
        tokens = sum(len(t.split()) for t in texts)
        return Embedded(model, [list(self.embeddings(model, t)) for t in texts], tokens, 0.0)


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
