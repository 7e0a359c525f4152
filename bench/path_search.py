"""Path search benchmark: racing vs exhaustive evaluation, and the chosen path vs the best single model.

On the three packaged models and two built-in suites, in one run against a real node started here:

1. evaluate the whole space exhaustively on the search split (real calls, recorded in the call cache);
2. run the search (racing with successive halving) on the same split, with the same cache;
3. measure on the held-out split: the search's chosen path, the exhaustive optimum (best search-split
   quality among all candidates), a random search at the same budget, the best single model and the
   other baselines.

Reported per suite: the fraction of exhaustive evaluations the search used, the chosen path's held-out
quality relative to the exhaustive optimum's, the chosen path and the front's operating points against
the best single model (quality and cost, with costs also given with tokens only, since compute seconds on
a shared CPU are noisy), and the calls the cache saved. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from _harness import BenchNode, emit, scratch
from iollm.paths.candidate import Candidate
from iollm.paths.catalog import load_suite
from iollm.paths.clients import (
    CachedClient,
    CallCache,
    CallResult,
    ModelClient,
    SerialPerModel,
    open_client,
    warm_up,
)
from iollm.paths.evaluation import Evaluator
from iollm.paths.pricing import PriceBook, node_prices
from iollm.paths.racing import pick_best
from iollm.paths.search import Search, SearchConfig
from iollm.paths.search_result import heldout_figures
from iollm.paths.stats import paired_bootstrap

MODELS = ["iollm/smollm2-135m-instruct", "iollm/gemma-3-270m", "iollm/qwen2.5-coder-0.5b-instruct"]
# IOLLM_BENCH_SUITES: comma-separated (public suites: gsm8k, arc-challenge, mmlu, humaneval, mbpp).
SUITES = os.environ.get("IOLLM_BENCH_SUITES", "gsm8k,evals/logical-counting").split(",")
# A cheaper space for a 2-core CPU: IOLLM_BENCH_TEMPLATES (e.g. single,vote,cascade), IOLLM_BENCH_STYLES
# (direct), IOLLM_BENCH_MAX_TOKENS (caps every completion); IOLLM_BENCH_EXHAUSTIVE=0 skips step 1.
TEMPLATES = [t for t in os.environ.get("IOLLM_BENCH_TEMPLATES", "").split(",") if t] or None
STYLES = [t for t in os.environ.get("IOLLM_BENCH_STYLES", "").split(",") if t] or None
MAX_TOKENS = int(os.environ["IOLLM_BENCH_MAX_TOKENS"]) if os.environ.get("IOLLM_BENCH_MAX_TOKENS") else None
EXHAUSTIVE = os.environ.get("IOLLM_BENCH_EXHAUSTIVE", "1") != "0"
# Smaller splits for a slow machine: IOLLM_BENCH_SEARCH_TASKS / IOLLM_BENCH_HELDOUT_TASKS.
SEARCH_TASKS = int(os.environ.get("IOLLM_BENCH_SEARCH_TASKS", "24"))
HELDOUT_TASKS = int(os.environ.get("IOLLM_BENCH_HELDOUT_TASKS", "40"))
# IOLLM_BENCH_CALL_CACHE keeps the call cache in a file that a later run reuses: its keys hold each model's
# content digest (weights and settings), which stays the same when a fresh node publishes the models again.
CALL_CACHE = os.environ.get("IOLLM_BENCH_CALL_CACHE")
SEED = 0
WORKERS = 8


class KeyLog:
    """Sits in front of the cache and counts the calls asked for and the distinct ones among them: the
    calls a run would make with an empty cache (identical calls within the run are made once)."""

    def __init__(self, inner: ModelClient) -> None:
        self.inner = inner
        self.keys: set[str] = set()
        self.total = 0

    async def chat(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> CallResult:
        self.total += 1
        self.keys.add(json.dumps([model, messages, params], sort_keys=True))
        return await self.inner.chat(model, messages, params)

    async def embed(self, model: str, texts: list[str]) -> Any:
        return await self.inner.embed(model, texts)

    def reset(self) -> dict[str, int]:
        counts = {"requested": self.total, "distinct": len(self.keys)}
        self.keys, self.total = set(), 0
        return counts


def _figures(evaluator: Evaluator, candidate: Candidate, tasks: list[Any]) -> dict[str, Any]:
    figures = heldout_figures(evaluator.records(candidate, tasks))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items() if k != "scores"} | {
        "scores": figures["scores"]
    }


def _brief(name: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, **{k: v for k, v in figures.items() if k != "scores"}}


def _versus(
    mine: dict[str, Any], single: dict[str, Any], mine_tokens: float, single_tokens: float
) -> dict[str, Any]:
    delta, low, high = paired_bootstrap(mine["scores"], single["scores"])
    ratio = mine["cost_per_task"] / single["cost_per_task"] if single["cost_per_task"] else None
    token_ratio = mine_tokens / single_tokens if single_tokens else None
    return {
        "quality_delta": round(delta, 4),
        "delta_ci": [round(low, 4), round(high, 4)],
        "cost_ratio": round(ratio, 4) if ratio is not None else None,
        "token_cost_ratio": round(token_ratio, 4) if token_ratio is not None else None,
        "same_quality_at_half_cost": delta >= 0 and ratio is not None and ratio <= 0.5,
        "plus_3_points_at_equal_cost": delta >= 0.03 and ratio is not None and ratio <= 1.0,
        "same_quality_at_half_token_cost": delta >= 0 and token_ratio is not None and token_ratio <= 0.5,
        "plus_3_points_at_equal_token_cost": delta >= 0.03 and token_ratio is not None and token_ratio <= 1.0,
    }


async def bench_suite(name: str, log: KeyLog, cache: CachedClient, prices: PriceBook) -> dict[str, Any]:
    suite = load_suite(name)
    total = SEARCH_TASKS + HELDOUT_TASKS
    config = SearchConfig(
        MODELS,
        suite,
        None,
        WORKERS,
        SEED,
        HELDOUT_TASKS / total,
        total,
        MAX_TOKENS,
        templates=TEMPLATES,
        styles=STYLES,
    )
    search = Search(config, log, prices)
    space, split = search.space, search.split
    preview = search.preview()
    say(f"{name}: {len(space)} candidates x {len(split.search)} search tasks; {len(split.heldout)} held out")

    # 1. exhaustive, filling the cache with real calls
    made, cached = cache.calls_made, cache.calls_cached
    started = time.perf_counter()
    exhaustive = Evaluator(log, prices, SEED, WORKERS, on_progress=_ticker("exhaustive"))
    if EXHAUSTIVE:
        await exhaustive.run([(c, t) for t in split.search for c in space], "exhaustive")
    exhaustive_seconds = time.perf_counter() - started
    exhaustive_calls = {
        "calls": log.reset(),
        "made": cache.calls_made - made,
        "cached": cache.calls_cached - cached,
    }
    if EXHAUSTIVE:  # the search split's figures survive a run stopped in a later phase
        scores = {c.name: exhaustive.figures(c, split.search) for c in space}
        say(
            "exhaustive "
            + json.dumps({n: {k: round(f[k], 4) for k in ("quality", "cost")} for n, f in scores.items()})
        )

    # 2. the search, on the same split and cache
    made, cached = cache.calls_made, cache.calls_cached
    started = time.perf_counter()
    result = await search.run()
    search_seconds = time.perf_counter() - started
    search_calls = {
        "calls": log.reset(),
        "made": cache.calls_made - made,
        "cached": cache.calls_cached - cached,
    }
    learned = {c["name"]: c for c in result["learned"]}
    chosen = next((c for c in space if c.name == result["best"]["name"]), None)
    if chosen is None:  # a learned path (router or logprob cascade) was chosen
        chosen = next(c for c in search.learned if c.name == result["best"]["name"])
    if not EXHAUSTIVE:  # the optimum among what the search itself evaluated on the whole search split
        exhaustive = search.evaluator
    ex_stats = {c.name: exhaustive.figures(c, split.search) for c in space}
    complete = [c for c in space if ex_stats[c.name]["n"] == len(split.search)] or space
    optimum = pick_best(complete, ex_stats)

    # 3. held-out figures for the exhaustive optimum and a random search at the same budget
    rng = random.Random(SEED)
    sampled = rng.sample(
        complete, max(1, min(len(complete), result["evaluations_used"] // len(split.search)))
    )
    random_pick = pick_best(sampled, ex_stats)
    evaluator = search.evaluator
    made, cached = cache.calls_made, cache.calls_cached
    await evaluator.run([(c, t) for c in (optimum, random_pick) for t in split.heldout], "bench")
    bench_calls = {
        "calls": log.reset(),
        "made": cache.calls_made - made,
        "cached": cache.calls_cached - cached,
    }
    held = {c.name: _figures(evaluator, c, split.heldout) for c in {optimum, random_pick, chosen}}

    # costs with tokens only (every call is cached now: this re-prices, it calls nothing)
    token_prices = PriceBook(prices=dict(prices.prices), compute_per_second=0, fallback=prices.fallback)
    repricer = Evaluator(log, token_prices, SEED, WORKERS)
    single = next(c for c in space if c.name == result["baselines"]["best_single"]["name"])
    points = [p for p in result["vs_best_single"]["operating_points"].values() if p]
    compared = [chosen, single, *(c for c in space if c.name in {p["name"] for p in points})]
    await repricer.run([(c, t) for c in compared for t in split.heldout], "reprice")
    token_cost = {
        c.name: heldout_figures(repricer.records(c, split.heldout))["cost_per_task"] for c in compared
    }
    single_held = _figures(evaluator, single, split.heldout)

    vs = {
        "chosen": {
            "name": chosen.name,
            **_versus(held[chosen.name], single_held, token_cost[chosen.name], token_cost[single.name]),
        }
    }
    for label, point in result["vs_best_single"]["operating_points"].items():
        if point:
            candidate = next(c for c in space if c.name == point["name"])
            vs[label] = {
                "name": candidate.name,
                **_versus(
                    _figures(evaluator, candidate, split.heldout),
                    single_held,
                    token_cost[candidate.name],
                    token_cost[single.name],
                ),
            }
        else:
            vs[label] = None
    met = sorted(
        {
            f"{v['name']}: {k}"
            for v in vs.values()
            if v
            for k in (
                "same_quality_at_half_cost",
                "plus_3_points_at_equal_cost",
                "same_quality_at_half_token_cost",
                "plus_3_points_at_equal_token_cost",
            )
            if v[k]
        }
    )

    ratio = held[chosen.name]["score"] / held[optimum.name]["score"] if held[optimum.name]["score"] else None
    fraction = result["evaluations_used"] / result["evaluations_exhaustive"]
    return {
        "suite": name,
        "search_tasks": len(split.search),
        "heldout_tasks": len(split.heldout),
        "split_fingerprint": split.fingerprint,
        "space_size": len(space),
        "templates": result["space"]["templates"],
        "projected_calls": preview["projected_calls"],
        "evaluations_exhaustive": result["evaluations_exhaustive"],
        "evaluations_used": result["evaluations_used"],
        "evaluations_fraction": round(fraction, 4),
        # everything the search spent on the search split: racing, completing the single models for the
        # baselines and learned routers, and completing a program path for its cascade
        "evaluations_all_search_split": (
            spent := result["evaluations_used"]
            + result["baseline_evaluations"]
            + result["learned_evaluations"]
        ),
        "evaluations_fraction_all": round(spent / result["evaluations_exhaustive"], 4),
        "schedule": result["schedule"],
        "rounds": [
            {k: r[k] for k in ("index", "tasks_seen", "evaluated", "alive")}
            | {"dropped_dominated": len(r["dropped_dominated"])}
            for r in result["rounds"]
        ],
        "exhaustive_optimum": {
            **_brief(optimum.name, held[optimum.name]),
            "search_quality": round(ex_stats[optimum.name]["quality"], 4),
        },
        "chosen": {
            **_brief(chosen.name, held[chosen.name]),
            "search_quality": result["best"]["search"]["quality"],
        },
        "quality_vs_exhaustive_optimum": round(ratio, 4) if ratio is not None else None,
        "target_98pct_quality_with_20pct_evaluations": bool(
            ratio is not None and ratio >= 0.98 and fraction <= 0.2
        ),
        "random_search_same_budget": {
            **_brief(random_pick.name, held[random_pick.name]),
            "candidates": len(sampled),
        },
        "best_single": {**_brief(single.name, single_held), "token_cost_per_task": token_cost[single.name]},
        "vs_best_single": vs,
        "cost_target_met_by": met,
        "baselines": {
            k: _brief(v["name"], v["heldout"]) if v else None for k, v in result["baselines"].items()
        },
        "simple_baselines": {
            "chosen": {k: v for k, v in result["simple_baselines"]["chosen"].items() if k != "scores"},
            **{
                k: ({kk: vv for kk, vv in v.items() if kk != "scores"} if v else None)
                for k, v in result["simple_baselines"]["baselines"].items()
            },
        },
        "verdict": result["simple_baselines"]["verdict"],
        "oracle_ceiling": (result["simple_baselines"]["baselines"]["oracle_router"] or {}).get("score"),
        "learned": [
            {"name": n, "search_cv": e["search"]["quality"], **_brief(n, e.get("heldout") or {})}
            for n, e in learned.items()
        ],
        "notes": result["notes"],
        "exhaustive_measured": EXHAUSTIVE,
        "pareto": [_brief(p["name"], p["heldout"]) for p in result["pareto"]],
        "search_split_top5_exhaustive": [
            {
                "name": c.name,
                "quality": round(ex_stats[c.name]["quality"], 4),
                "cost": round(ex_stats[c.name]["cost"], 1),
            }
            for c in sorted(space, key=lambda c: (-ex_stats[c.name]["quality"], ex_stats[c.name]["cost"]))[:5]
        ],
        "calls": {"exhaustive": exhaustive_calls, "search": search_calls, "bench_heldout": bench_calls},
        "seconds": {"exhaustive": round(exhaustive_seconds, 1), "search": round(search_seconds, 1)},
    }


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ticker(label: str):
    last = [-1]

    def tick(_phase: str, done: int, total: int) -> None:
        tenth = done * 10 // max(1, total)
        if tenth != last[0]:
            last[0] = tenth
            say(f"  {label}: {done}/{total}")

    return tick


async def run(node: BenchNode, folder: Path) -> dict[str, Any]:
    prices = node_prices(node.url, node.token, MODELS)
    cache_path = Path(CALL_CACHE).expanduser() if CALL_CACHE else folder / "calls.sqlite"
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    _, inner = open_client(
        f"{node.url}/v1", node.token, None, concurrency=len(MODELS)
    )  # one call at a time per model (SerialPerModel); token costs are reported beside compute costs
    await warm_up(inner, MODELS)
    client = CachedClient(SerialPerModel(inner), CallCache(cache_path))
    log = KeyLog(client)
    suites = []
    started = time.perf_counter()
    try:
        for name in SUITES:
            suites.append(await bench_suite(name, log, client, prices))
            say("checkpoint " + json.dumps(suites[-1]))  # a long run's figures survive a later failure
    finally:
        await inner.close()
    naive = sum(s["projected_calls"]["exhaustive"] for s in suites)
    calls = client.calls_made + client.calls_cached
    return {
        "benchmark": "path_search",
        "models": MODELS,
        "prices": {
            m: {
                "prompt_per_million": p.prompt_per_million,
                "completion_per_million": p.completion_per_million,
            }
            for m, p in prices.prices.items()
        }
        | {"compute_micro_per_second": prices.compute_per_second},
        "seed": SEED,
        "split_sizes": {"search": SEARCH_TASKS, "heldout": HELDOUT_TASKS},
        "space_filter": {"templates": TEMPLATES, "styles": STYLES, "max_tokens": MAX_TOKENS},
        "call_cache": str(CALL_CACHE) if CALL_CACHE else "fresh (scratch)",
        "suites": suites,
        "targets": {
            "quality_98pct_of_exhaustive_optimum_with_at_most_20pct_evaluations": {
                s["suite"]: s["target_98pct_quality_with_20pct_evaluations"] for s in suites
            },
            "vs_best_single_same_quality_half_cost_or_plus3_equal_cost": {
                s["suite"]: s["cost_target_met_by"] or "neither" for s in suites
            },
        },
        "cache": {
            "calls_requested": calls,
            "calls_made": client.calls_made,
            "calls_cached": client.calls_cached,
            "share_saved": round(client.calls_cached / calls, 4) if calls else 0.0,
            "exhaustive_naive_calls_projected": naive,
        },
        "seconds": round(time.perf_counter() - started, 1),
        "baseline": "exhaustive evaluation of the same space on the same split, in the same run",
    }


def main() -> None:
    with scratch("iollm-bench-paths-") as folder:
        home = folder / "home"
        home.mkdir()
        node = BenchNode(home)
        try:
            result = asyncio.run(run(node, folder))
        finally:
            node.stop()
    emit(result)


if __name__ == "__main__":
    main()
