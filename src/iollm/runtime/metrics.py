"""Prometheus metrics of one runtime, served at ``GET /metrics`` (text exposition format).

Each ``Runtime`` owns its own ``CollectorRegistry`` (never the process-wide default one: tests run
several nodes in one process). Every engine call (chat, completion, embedding) is counted once, when
its usage record is finished (``Runtime._finish`` and ``Runtime.embed``):

- ``iollm_calls_total{model,kind,status}``: calls by kind (chat, completion, embedding) and status
  (ok, error, cancelled)
- ``iollm_prompt_tokens_total{model}``, ``iollm_completion_tokens_total{model}``: tokens in and out
- ``iollm_time_to_first_token_seconds{model}``: histogram, calls that produced text only
- ``iollm_calls_in_flight{model}``, ``iollm_calls_waiting{model}``: generating now and queued (read
  from the model manager when scraped)
- ``iollm_loaded_models``: engines loaded now

The endpoint is anonymous, like Ollama's and vLLM's. So that it names no private repository, the
``model`` label is the model's id only when an anonymous caller may read its repository (checked
against the hub, at most a second old, when a call is recorded, and for in-flight engines when
scraped); every other model is labelled ``private``. A repository made private later keeps the counters it already has under its name
(new calls are counted as ``private``); restarting the node forgets them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, Response

from ..hub.accounts import ANONYMOUS

if TYPE_CHECKING:
    from .manager import ModelManager
    from .resolve import Resolver
    from .usage import UsageRecord

PRIVATE = "private"
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


LABEL_CACHE_SECONDS = 1.0  # as long as the resolver caches a model's visibility


def public_label(resolver: Resolver) -> Callable[[str], str]:
    """``label(model_id)``: the id when anonymous callers can read the repository it names (a model's
    id is its repository's id), else ``private`` (also when the hub cannot tell). Each answer is kept
    for a second: it is asked once per call, before the call's answer is sent, and a database query
    there took a quarter of the node's busy time on one-token calls (py-spy)."""
    cache: dict[str, tuple[float, str]] = {}

    def label(model_id: str) -> str:
        now = time.monotonic()
        hit = cache.get(model_id)
        if hit is not None and now - hit[0] < LABEL_CACHE_SECONDS:
            return hit[1]
        try:
            resolver.hub.get_repo(ANONYMOUS, "model", model_id, pull_through=False)
            answer = model_id
        except Exception:
            answer = PRIVATE
        if len(cache) > 10_000:  # bounded: ids come from the hub, but never let it grow unchecked
            cache.clear()
        cache[model_id] = (now, answer)
        return answer

    return label


class _Engines:
    """Calls in flight and waiting per model, and the number of loaded engines, read when scraped."""

    def __init__(self, manager: ModelManager, label: Callable[[str], str]) -> None:
        self.manager = manager
        self.label = label

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        loaded = self.manager.loaded()
        active = GaugeMetricFamily("iollm_calls_in_flight", "Calls generating now", labels=["model"])
        waiting = GaugeMetricFamily("iollm_calls_waiting", "Calls queued for an engine", labels=["model"])
        totals: dict[str, list[int]] = {}
        for engine in loaded:
            spec = engine["spec"]
            name = self.label(spec.model_id) if spec is not None else PRIVATE
            counts = totals.setdefault(name, [0, 0])
            counts[0] += engine["active"]
            counts[1] += engine["waiting"]
        for name, (a, w) in sorted(totals.items()):
            active.add_metric([name], a)
            waiting.add_metric([name], w)
        yield active
        yield waiting
        yield GaugeMetricFamily("iollm_loaded_models", "Engines loaded now", value=len(loaded))


class Metrics:
    """The runtime's registry. ``prometheus_client`` comes with the ``runtime`` extra; without it
    constructing this raises ImportError, the runtime keeps no metrics and ``/metrics`` answers 404."""

    def __init__(self, manager: ModelManager, label: Callable[[str], str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.label = label
        r = self.registry
        self.calls = Counter("iollm_calls", "Engine calls", ["model", "kind", "status"], registry=r)
        self.prompt_tokens = Counter("iollm_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.completion_tokens = Counter(
            "iollm_completion_tokens", "Completion tokens generated", ["model"], registry=r
        )
        self.ttft = Histogram(
            "iollm_time_to_first_token_seconds",
            "Seconds from a call's start to its first text",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        r.register(_Engines(manager, label))

    def record(self, record: UsageRecord) -> None:
        """Count one finished call (from its usage record)."""
        model = self.label(record.model)
        self.calls.labels(model, record.kind, record.status).inc()
        self.prompt_tokens.labels(model).inc(record.prompt_tokens)
        self.completion_tokens.labels(model).inc(record.completion_tokens)
        if record.ttft_ms is not None:
            self.ttft.labels(model).observe(record.ttft_ms / 1000)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry: Metrics | None = request.app.state.runtime.metrics
    if registry is None:
        raise HTTPException(404, "metrics need prometheus_client (pip install 'iollm[runtime]')")
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(registry.exposition(), media_type=CONTENT_TYPE_LATEST)
