"""A model served by another OpenAI-compatible or Ollama server, behind this node's APIs and metering.

Token counts come from the remote server's own usage report (``stream_options.include_usage`` for
OpenAI-compatible servers, ``prompt_eval_count``/``eval_count`` for Ollama): only the engine that ran
the model knows the exact numbers.

Log-probabilities are refused (``Unsupported``): a server elsewhere may ignore the parameter, and a
score we cannot vouch for is worse than none. Our own worker processes (``workers.WorkerBackend``)
forward them. Tools and grammars likewise: another server answers tool calls in its own structured form
and may not enforce a grammar, so they are refused here and forwarded only to our workers, which run
this node's own backends and return the model's raw text.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx

from .base import (
    BackendFailure,
    ChatMessage,
    ContextTooLong,
    Counts,
    Embedding,
    GenerationParams,
    Piece,
    Unsupported,
    logprobs_from_json,
)
from .registry import BackendType, LoadOptions


class RemoteBackend:
    name = "remote"
    forwards_logprobs = False  # only workers this node started are trusted to compute them

    def __init__(self, url: str, model: str, api: str = "openai", api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.api = api
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(600.0, connect=10.0))
        self.context_length = 0  # unknown: the remote server enforces its own

    def _openai_body(self, params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        return body

    def _ollama_options(self, params: GenerationParams) -> dict[str, Any]:
        options: dict[str, Any] = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
        }
        if params.max_tokens is not None:
            options["num_predict"] = params.max_tokens
        if params.seed is not None:
            options["seed"] = params.seed
        if params.stop:
            options["stop"] = params.stop
        return options

    def _check(self, params: GenerationParams) -> None:
        if self.forwards_logprobs:
            return
        if params.logprobs is not None:
            raise Unsupported(
                f"logprobs are not available for models served by another server ({self.url})",
                param="logprobs",
            )
        if params.tools:
            raise Unsupported(
                f"tools are not available for models served by another server ({self.url})", param="tools"
            )
        if params.grammar is not None:
            raise Unsupported(
                f"structured output is not available for models served by another server ({self.url})",
                param=params.grammar_param,
            )

    def chat(
        self, messages: list[ChatMessage], params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        self._check(params)
        wire = [
            m.wire() if self.forwards_logprobs else {"role": m.role, "content": m.content} for m in messages
        ]
        if self.api == "ollama":
            body = {
                "model": self.model,
                "messages": wire,
                "stream": True,
                "options": self._ollama_options(params),
            }
            return self._ollama(
                "/api/chat", body, counts, cancel, lambda d: (d.get("message") or {}).get("content", "")
            )
        body = {**self._openai_body(params), "messages": wire}
        return self._openai(
            "/chat/completions", body, counts, cancel, lambda c: (c.get("delta") or {}).get("content")
        )

    def complete(
        self, prompt: str, params: GenerationParams, counts: Counts, cancel: threading.Event
    ) -> Iterator[Piece]:
        self._check(params)
        if self.api == "ollama":
            body = {
                "model": self.model,
                "prompt": prompt,
                "raw": True,
                "stream": True,
                "options": self._ollama_options(params),
            }
            return self._ollama("/api/generate", body, counts, cancel, lambda d: d.get("response", ""))
        body = {**self._openai_body(params), "prompt": prompt}
        return self._openai("/completions", body, counts, cancel, lambda c: c.get("text"))

    def _post_stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            response = self.http.send(
                self.http.build_request("POST", self.url + path, json=body), stream=True
            )
        except httpx.HTTPError as exc:
            raise BackendFailure(
                f"remote server {self.url} is unreachable: {exc.__class__.__name__}"
            ) from exc
        if response.status_code >= 400:
            detail = response.read().decode(errors="replace")[:500]
            response.close()
            refused = _unsupported(detail) if response.status_code == 400 else None
            if refused is not None:
                raise refused
            if response.status_code == 400 and "context" in detail.lower():
                raise ContextTooLong(f"remote server refused the prompt: {detail}")
            raise BackendFailure(f"remote server {self.url} answered {response.status_code}: {detail}")
        return response

    def _openai(self, path, body, counts: Counts, cancel: threading.Event, text_of) -> Iterator[Piece]:
        response = self._post_stream(path, body)
        finish = "stop"
        try:
            for line in response.iter_lines():
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise BackendFailure(f"remote server error: {event['error']}")
                if event.get("usage"):
                    counts.prompt_tokens = event["usage"].get("prompt_tokens", 0)
                    counts.completion_tokens = event["usage"].get("completion_tokens", 0)
                for choice in event.get("choices") or []:
                    text = text_of(choice)
                    scored = choice.get("logprobs")
                    entries = (
                        logprobs_from_json(scored)
                        if isinstance(scored, dict) and "tokens" in scored
                        else None
                    )
                    if text or entries:
                        yield Piece(text or "", logprobs=entries)
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
        except httpx.HTTPError as exc:
            raise BackendFailure(
                f"remote server {self.url} broke the stream: {exc.__class__.__name__}"
            ) from exc
        finally:
            response.close()
        yield Piece("", finish)

    def _ollama(self, path, body, counts: Counts, cancel: threading.Event, text_of) -> Iterator[Piece]:
        response = self._post_stream(path, body)
        finish = "stop"
        try:
            for line in response.iter_lines():
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                if "error" in event:
                    raise BackendFailure(f"remote server error: {event['error']}")
                text = text_of(event)
                if text:
                    yield Piece(text)
                if event.get("done"):
                    counts.prompt_tokens = event.get("prompt_eval_count", 0)
                    counts.completion_tokens = event.get("eval_count", 0)
                    finish = "length" if event.get("done_reason") == "length" else "stop"
                    break
        except httpx.HTTPError as exc:
            raise BackendFailure(
                f"remote server {self.url} broke the stream: {exc.__class__.__name__}"
            ) from exc
        finally:
            response.close()
        yield Piece("", finish)

    def embed(self, texts: list[str]) -> Embedding:
        try:
            if self.api == "ollama":
                reply = self.http.post(self.url + "/api/embed", json={"model": self.model, "input": texts})
                reply.raise_for_status()
                data = reply.json()
                return Embedding(data["embeddings"], data.get("prompt_eval_count", 0))
            reply = self.http.post(
                self.url + "/embeddings",
                json={"model": self.model, "input": texts, "encoding_format": "float"},
            )
            reply.raise_for_status()
            data = reply.json()
        except httpx.HTTPError as exc:
            raise BackendFailure(f"remote embeddings from {self.url} failed: {exc}") from exc
        ordered = sorted(data["data"], key=lambda item: item["index"])
        return Embedding(
            [item["embedding"] for item in ordered], data.get("usage", {}).get("prompt_tokens", 0)
        )

    def count_tokens(self, text: str) -> int:
        return 0

    def close(self) -> None:
        self.http.close()


def _unsupported(detail: str) -> Unsupported | None:
    """A 400 ``unsupported_parameter`` error (our worker's) as the same refusal, naming its parameter."""
    try:
        error = json.loads(detail).get("error") or {}
    except (ValueError, AttributeError):
        return None
    if error.get("code") != Unsupported.code:
        return None
    return Unsupported(str(error.get("message", "")), param=error.get("param"))


def load(options: LoadOptions) -> RemoteBackend:
    return RemoteBackend(options.url, options.model, options.api)


BACKEND = BackendType(name="remote", load=load, remote=True, precedence=90)
