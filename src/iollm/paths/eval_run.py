"""``iollm eval``: score one model that a node serves on a public benchmark, through its OpenAI API.

Because every call goes through ``/v1``, whatever the node serves can be evaluated the same way: a hub
model, an environment, a published path (``path/NAME``). Each item's result is cached under a key made
of the model's revision, the suite's data, the protocol and its settings, so a rerun costs no model call and
an interrupted run resumes where it stopped. The cache keeps what the model said (its answer, or each
option's log-probability), not only the verdict: a rerun scores it again with today's checkers. The score comes with a 95 % Wilson interval.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .checkers import check
from .eval_prompts import build_generate, build_loglikelihood
from .sandbox import Sandbox
from .stats import wilson
from .suites import Suite
from .task import Task

__all__ = [
    "EvalConfig",
    "EvalReport",
    "ItemResult",
    "ResultCache",
    "choose_option",
    "run_eval",
    "sample",
    "suite_fingerprint",
]

HARNESS_VERSION = 1
PROTOCOLS = ("loglikelihood", "generate")
DEFAULT_MAX_TOKENS = {"numeric": 512, "math": 768, "python_tests": 512, "choice": 32, "exact": 256}


class Transport(Protocol):
    """What the runner needs from a node client: one JSON POST (``NodeClient.post_json``)."""

    def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how; every field but ``concurrency`` is part of the cache key."""

    model: str
    suite: str
    protocol: str = "generate"
    api: str = "chat"
    shots: int = 0
    limit: int | None = None
    max_tokens: int | None = None
    revision: str = ""  # what the model computes with: a hash of its files (README.md aside)
    commit: str = ""  # the commit evaluated, for the record
    concurrency: int = 2

    def cache_key(self, data_fingerprint: str) -> str:
        fields = {k: v for k, v in asdict(self).items() if k not in ("concurrency", "limit", "commit")}
        fields |= {"data": data_fingerprint, "harness": HARNESS_VERSION}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass
class ItemResult:
    """One scored item: pass/fail, what was read out of the answer, tokens spent."""

    id: str
    passed: bool
    extracted: str
    detail: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    passed_norm: bool | None = None  # loglikelihood only: per-byte normalised choice
    output: str | None = None  # generate: the text the checker read (kept so a better checker rescores it)
    logprobs: list[float] | None = None  # loglikelihood: each option's summed log-probability


@dataclass
class EvalReport:
    """The figures ``iollm eval`` prints and writes to the model card."""

    model: str
    revision: str
    commit: str
    suite: str
    protocol: str
    api: str
    shots: int
    n: int
    score: float
    ci_low: float
    ci_high: float
    score_norm: float | None
    cached: int
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    items: list[ItemResult] = field(default_factory=list)

    def to_json(self, with_items: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not with_items:
            out.pop("items")
        return out


def suite_fingerprint(suite: Suite) -> str:
    """sha256 of every task and exemplar as JSON: a changed item or prompt never reads a stale result."""
    digest = hashlib.sha256()
    for task in [*suite.tasks, *suite.exemplars]:
        digest.update(json.dumps(task.to_json(), sort_keys=True).encode())
    return digest.hexdigest()


def sample(suite: Suite, limit: int | None) -> list[Task]:
    """The first ``limit`` tasks in a fixed pseudo-random order (all of them without a limit): a sample
    that spreads over a suite's subjects and is the same on every run."""
    if limit is None or limit >= len(suite.tasks):
        return list(suite.tasks)
    ranked = sorted(suite.tasks, key=lambda t: hashlib.sha256(f"eval\x00{t.id}".encode()).digest())
    return ranked[:limit]


class ResultCache:
    """Per-item results in SQLite, keyed by the run's cache key; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS items (key TEXT, item TEXT, result TEXT, PRIMARY KEY (key, item))"
        )

    def get(self, key: str, item: str) -> ItemResult | None:
        with self.lock:
            row = self.db.execute(
                "SELECT result FROM items WHERE key = ? AND item = ?", (key, item)
            ).fetchone()
        return ItemResult(**json.loads(row[0])) if row else None

    def put(self, key: str, result: ItemResult) -> None:
        with self.lock, self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO items VALUES (?, ?, ?)", (key, result.id, json.dumps(asdict(result)))
            )

    def close(self) -> None:
        self.db.close()


# ---------------------------------------------------------------------------------------------------
# Scoring one item


def continuation_logprob(logprobs: dict[str, Any], context_chars: int) -> tuple[float, int]:
    """Sum of the log-probabilities of the tokens that start at or after ``context_chars``, and their count."""
    total, count = 0.0, 0
    for offset, value in zip(logprobs["text_offset"], logprobs["token_logprobs"], strict=True):
        if offset >= context_chars:
            if value is None:
                raise ValueError("the node returned no log-probability for a continuation token")
            total += float(value)
            count += 1
    if count == 0:
        raise ValueError("the continuation has no tokens of its own (it merged into the context)")
    return total, count


def choose_option(logprobs: list[float], continuations: list[str]) -> tuple[int, int]:
    """(argmax of the log-likelihood, argmax per byte of continuation): the harness's acc and acc_norm."""
    best = max(range(len(logprobs)), key=lambda i: logprobs[i])
    per_byte = [lp / max(1, len(c.encode())) for lp, c in zip(logprobs, continuations, strict=True)]
    return best, max(range(len(per_byte)), key=lambda i: per_byte[i])


def _score_loglikelihood(client: Transport, config: EvalConfig, suite: Suite, task: Task) -> ItemResult:
    requests = build_loglikelihood(suite, task, config.shots)
    sums, prompt_tokens = [], 0
    for request in requests:
        body = {
            "model": config.model,
            "prompt": request.context + request.continuation,
            "max_tokens": 0,
            "echo": True,
            "logprobs": 1,
            "temperature": 0.0,
        }
        reply = client.post_json("/v1/completions", body)
        total, _ = continuation_logprob(reply["choices"][0]["logprobs"], len(request.context))
        sums.append(total)
        prompt_tokens += int((reply.get("usage") or {}).get("prompt_tokens") or 0)
    return _ll_result(task, sums, [r.continuation for r in requests], prompt_tokens)


def _ll_result(task: Task, sums: list[float], continuations: list[str], prompt_tokens: int) -> ItemResult:
    best, best_norm = choose_option(sums, continuations)
    gold = int(task.meta["gold"])
    detail = "logprobs " + ", ".join(f"{s:.3f}" for s in sums)
    return ItemResult(
        task.id, best == gold, task.choices[best], detail, prompt_tokens, 0, best_norm == gold, logprobs=sums
    )


def _score_generate(
    client: Transport, config: EvalConfig, suite: Suite, task: Task, sandbox: Sandbox
) -> ItemResult:
    max_tokens = config.max_tokens or DEFAULT_MAX_TOKENS.get(task.checker, 256)
    request = build_generate(suite, task, config.shots, config.api, max_tokens)
    body = request.body(config.model)
    if config.api == "chat":
        reply = client.post_json("/v1/chat/completions", body)
        text = reply["choices"][0]["message"].get("content") or ""
    else:
        reply = client.post_json("/v1/completions", body)
        text = reply["choices"][0]["text"]
    usage = reply.get("usage") or {}
    tokens = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    return _generated_result(task, request.prefix + text, tokens, sandbox)


def _generated_result(task: Task, output: str, tokens: tuple[int, int], sandbox: Sandbox) -> ItemResult:
    result = check(task, output, sandbox)
    return ItemResult(
        task.id, result.passed, result.extracted[:500], result.detail[:300], *tokens, output=output
    )


def rescore(item: ItemResult, task: Task, suite: Suite, config: EvalConfig, sandbox: Sandbox) -> ItemResult:
    """A cached item scored again from what the model said, with today's checkers: a fixed checker or
    extraction never leaves stale scores in the cache. Items cached without their output are kept."""
    if item.output is not None:
        return _generated_result(task, item.output, (item.prompt_tokens, item.completion_tokens), sandbox)
    if item.logprobs is not None:
        continuations = [r.continuation for r in build_loglikelihood(suite, task, config.shots)]
        return _ll_result(task, item.logprobs, continuations, item.prompt_tokens)
    return item


# ---------------------------------------------------------------------------------------------------
# A run


def run_eval(
    client: Transport,
    config: EvalConfig,
    suite: Suite,
    cache: ResultCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Score ``config.model`` on (a sample of) ``suite``; items already in ``cache`` are not asked again."""
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {config.protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    tasks = sample(suite, config.limit)
    if config.protocol == "loglikelihood" and not all(t.meta.get("requests") for t in tasks):
        raise ValueError(f"{suite.name} is not multiple choice: use --protocol generate")
    key = config.cache_key(suite_fingerprint(suite))
    sandbox = Sandbox()
    started = time.monotonic()
    results: dict[str, ItemResult] = {}
    cached = 0
    done = 0
    if progress:
        progress(done, len(tasks))
    lock = threading.Lock()

    def score(task: Task) -> None:
        nonlocal done, cached
        hit = cache.get(key, task.id) if cache else None
        if hit is not None:
            result = rescore(hit, task, suite, config, sandbox)
        elif config.protocol == "loglikelihood":
            result = _score_loglikelihood(client, config, suite, task)
        else:
            result = _score_generate(client, config, suite, task, sandbox)
        if cache and hit is None:
            cache.put(key, result)
        with lock:
            results[task.id] = result
            cached += hit is not None
            done += 1
            if progress:
                progress(done, len(tasks))

    with ThreadPoolExecutor(max_workers=max(1, config.concurrency)) as pool:
        for future in [pool.submit(score, task) for task in tasks]:
            future.result()
    ordered = [results[t.id] for t in tasks]
    passed = sum(r.passed for r in ordered)
    low, high = wilson(passed, len(ordered))
    norm = [r.passed_norm for r in ordered]
    score_norm = sum(bool(v) for v in norm) / len(norm) if norm and all(v is not None for v in norm) else None
    return EvalReport(
        model=config.model,
        revision=config.revision,
        commit=config.commit,
        suite=suite.name,
        protocol=config.protocol,
        api=config.api if config.protocol == "generate" else "completion",
        shots=config.shots,
        n=len(ordered),
        score=passed / len(ordered) if ordered else math.nan,
        ci_low=low,
        ci_high=high,
        score_norm=score_norm,
        cached=cached,
        seconds=round(time.monotonic() - started, 2),
        prompt_tokens=sum(r.prompt_tokens for r in ordered),
        completion_tokens=sum(r.completion_tokens for r in ordered),
        items=ordered,
    )
