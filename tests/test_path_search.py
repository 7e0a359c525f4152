"""Search logic on recorded responses: fast and deterministic, with a synthetic suite whose optimum is known.

Three fake models answer "What is A plus B?" correctly with a fixed probability per model and prompt style
(decided by a hash, so every rerun sees the same answers); the big model's programs are always right, so
``program(big)`` is the known optimum.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from iollm.database import open_database
from iollm.paths.call_plan import call_signatures, projected_calls
from iollm.paths.checkers import check
from iollm.paths.clients import CachedClient, CallCache, RecordedClient
from iollm.paths.evaluation import Evaluator, SearchError, evaluate_unit_async
from iollm.paths.executor import Executor
from iollm.paths.graph import parse_graph
from iollm.paths.leaderboard import leaderboard, list_breakthroughs, submit
from iollm.paths.leaderboard import metadata as leaderboard_metadata
from iollm.paths.pricing import PriceBook, prices_from_json, prices_to_json
from iollm.paths.racing import _cut, pick_best, plan_schedule, race
from iollm.paths.search import Search, SearchConfig
from iollm.paths.space import build_space
from iollm.paths.stats import bootstrap_ci, bounds, paired_bootstrap, pareto_front, wilson
from iollm.paths.suites import Suite, Task

SMALL, MID, BIG = "t/small", "t/mid", "t/big"
MODELS = [BIG, SMALL, MID]
ACCURACY = {SMALL: 0.25, MID: 0.45, BIG: 0.7}
PRICES = PriceBook.from_parameters({SMALL: 100_000_000, MID: 300_000_000, BIG: 1_000_000_000})
QUESTION = re.compile(r"What is (\d+) plus (\d+)\?")


def _coin(*parts: Any) -> float:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def synthetic(model: str, prompt: str, params: dict[str, Any]) -> str:
    """A recorded 'model': deterministic per (model, question, style, seed, temperature)."""
    found = QUESTION.search(prompt)
    if found is None:
        return "I am not sure."
    a, b = int(found.group(1)), int(found.group(2))
    right, wrong = a + b, a + b + 1 + int(_coin(model, a, b) * 5)
    if "numbered plan" in prompt:
        return "1. Add the two numbers.\n2. Check the sum."
    if "Check the proposed answer" in prompt:
        return "It is wrong."
    if "Give the corrected answer" in prompt:  # intrinsic self-correction makes things worse
        return f"Answer: {wrong}"
    if "Python program" in prompt:
        ok = model == BIG or _coin(model, a, b, "program") < ACCURACY[model] / 2
        return f"```python\nprint({a} + {b})\n```" if ok else f"```python\nprint({a} - {b})\n```"
    style = "step" if "step by step" in prompt or "Follow the plan" in prompt else "direct"
    accuracy = min(1.0, ACCURACY[model] + (0.05 if style == "step" else 0.0))
    seed = params.get("seed", 0) if params.get("temperature", 0) > 0 else "greedy"
    answer = right if _coin(model, a, b, style, seed) < accuracy else wrong
    return f"Adding them gives the sum.\nAnswer: {answer}" if style == "step" else str(answer)


def make_suite(n: int = 80) -> Suite:
    tasks = []
    for i in range(n):
        a, b = 10 + (i * 37) % 89, 10 + (i * 53) % 83
        tasks.append(Task(f"synthetic/{i}", f"What is {a} plus {b}?", str(a + b), "numeric"))
    return Suite("synthetic/add", "synthetic additions", tasks, "memory")


class SeenClient(RecordedClient):
    """Records every prompt with the phase the search was in when the call was made."""

    def __init__(self) -> None:
        super().__init__(synthetic)
        self.phase = "search"
        self.seen: list[tuple[str, str]] = []

    async def chat(self, model, messages, params):
        self.seen.append((self.phase, messages[-1]["content"]))
        return await super().chat(model, messages, params)


def run_search(
    client: Any, suite: Suite, budget: int | None = None, **kw: Any
) -> tuple[Search, dict[str, Any]]:
    search = Search(SearchConfig(MODELS, suite, budget=budget, workers=8, **kw), client, PRICES)
    return search, asyncio.run(search.run())


def exhaustive_best(search: Search) -> str:
    evaluator = Evaluator(RecordedClient(synthetic), PRICES, workers=16)
    asyncio.run(evaluator.run([(c, t) for c in search.space for t in search.split.search], "exhaustive"))
    stats = {c.name: evaluator.figures(c, search.split.search) for c in search.space}
    return pick_best(search.space, stats).name


# ---------------------------------------------------------------------------------------------------
# Space


def test_space_size_and_validity() -> None:
    space = build_space(MODELS, "numeric", PRICES)
    assert len(space) == 68  # 53 + mixed-model MoA per aggregator, pot-check and program-cascade (3 + 3 each)
    assert len({c.name for c in space}) == len(space) and len({c.hash for c in space}) == len(space)
    for candidate in space:
        parse_graph(candidate.graph)
    cascade = next(c for c in space if c.name == "cascade:direct(small>mid>big)")
    assert cascade.assignment["models"] == [SMALL, MID, BIG]  # cheapest first, by price
    code = build_space(MODELS, "python_tests", PRICES)
    assert len(code) == 56 and any(c.template == "verify" for c in code)
    assert not any(c.template.startswith("program") for c in code)


def test_projected_calls_count_shared_calls_once() -> None:
    space = build_space(MODELS, "numeric", PRICES)
    projected = projected_calls(space, 10)
    assert projected["unique"] < projected["naive"] / 2
    single = next(c for c in space if c.name == "single:direct(small)")
    cascade = next(c for c in space if c.name == "cascade:direct(small>mid)")
    vote = next(c for c in space if c.name == "vote@3:direct(small)")
    # the cascade's first answer is the single model's answer, its agreement sample a vote sample
    first, sample = call_signatures(cascade.graph)[:2]
    assert first in call_signatures(single.graph) and sample in call_signatures(vote.graph)


# ---------------------------------------------------------------------------------------------------
# Search


def test_search_finds_known_optimum_with_far_fewer_evaluations() -> None:
    search, result = run_search(RecordedClient(synthetic), make_suite())
    # the big model's programs are always right: its program, alone or first in a program cascade that
    # then never escalates, is the optimum (the two tie on quality and cost)
    assert result["best"]["name"] in {"program(big)", "program-cascade(big>big)"}
    assert result["best"]["name"] == exhaustive_best(search)
    assert result["evaluations_used"] <= 0.2 * result["evaluations_exhaustive"]
    assert result["heldout"]["score"] == 1.0
    assert {
        "best",
        "heldout",
        "evaluations_used",
        "evaluations_exhaustive",
        "calls_made",
        "calls_cached",
        "pareto",
        "baselines",
    } <= set(result)
    assert set(result["baselines"]) == {"best_single", "self_consistency", "cascade"}
    assert result["baselines"]["best_single"]["template"] == "single"
    # self-consistency of the best single model at about the chosen path's cost
    assert result["baselines"]["self_consistency"]["name"].startswith("vote@")
    simple = result["simple_baselines"]
    assert set(simple["baselines"]) == {
        "best_single",
        "cheapest_model",
        "self_consistency_equal_cost",
        "random_routing_equal_cost",
        "oracle_router",
    }
    assert (
        simple["verdict"]
        and simple["baselines"]["oracle_router"]["score"] >= simple["baselines"]["best_single"]["score"]
    )
    assert result["baselines"]["cascade"]["assignment"]["models"] == [SMALL, MID, BIG]
    assert result["split"]["fingerprint"] == search.split.fingerprint
    json.dumps(result)


def test_held_out_split_untouched_until_the_end() -> None:
    client = SeenClient()
    search = Search(SearchConfig(MODELS, make_suite(), workers=8), client, PRICES)
    original = search.evaluator.run

    async def tagged(pairs, phase):
        client.phase = phase
        await original(pairs, phase)

    search.evaluator.run = tagged
    asyncio.run(search.run())
    heldout = {t.input for t in search.split.heldout}
    before = [prompt for phase, prompt in client.seen if phase != "heldout"]
    assert before and not any(q in prompt for prompt in before for q in heldout)
    assert any(q in prompt for phase, prompt in client.seen if phase == "heldout" for q in heldout)
    phases = [phase for phase, _ in client.seen]
    assert "heldout" not in phases[: phases.index("heldout")] and set(phases[phases.index("heldout") :]) == {
        "heldout"
    }


def test_dominated_candidates_are_dropped() -> None:
    suite = make_suite(40)
    space = build_space(MODELS, "numeric", PRICES)
    evaluator = Evaluator(RecordedClient(synthetic), PRICES, workers=8)
    _, rounds, schedule = asyncio.run(
        race(space, suite.tasks, evaluator, budget=len(space) * len(suite.tasks))
    )
    assert schedule.eta == 2  # gentle halving: elimination by confidence does the rest
    dropped = {name for r in rounds for name in r.dropped_dominated}
    assert any(name.startswith("critique-refine(solver=big") for name in dropped)
    assert "program(big)" not in dropped
    # the rule itself: UCB below another's LCB at no greater cost
    space = build_space(MODELS, "numeric", PRICES)[:3]
    stats = {
        space[0].name: {"quality": 0.9, "low": 0.8, "high": 0.95, "cost": 10.0, "latency_s": 1.0},
        space[1].name: {"quality": 0.2, "low": 0.1, "high": 0.3, "cost": 20.0, "latency_s": 1.0},
        space[2].name: {"quality": 0.7, "low": 0.5, "high": 0.85, "cost": 5.0, "latency_s": 1.0},
    }
    dominated, kept = _cut(space, stats, eta=3)
    assert dominated == [space[1].name]  # worse and dearer than the first
    assert {c.name for c in kept} == {space[0].name, space[2].name}  # the cheaper contender is on the front
    stats[space[2].name].update(quality=0.3, low=0.1, high=0.5)  # clearly worse than the best: not protected
    assert [c.name for c in _cut(space, stats, eta=3)[1]] == [space[0].name]


def test_cache_makes_a_second_identical_run_free(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    inner = RecordedClient(synthetic)
    first = CachedClient(inner, cache)
    _, one = run_search(first, make_suite())
    assert first.calls_made > 0 and inner.calls == first.calls_made
    second = CachedClient(inner, cache)
    _, two = run_search(second, make_suite())
    assert second.calls_made == 0 and second.calls_cached > 0 and inner.calls == first.calls_made
    assert one["evaluations_used"] == two["evaluations_used"] and one["best"]["name"] == two["best"]["name"]
    for key in ("score", "ci_low", "ci_high", "cost_per_task"):  # latency includes sandbox wall time
        assert one["heldout"][key] == two["heldout"][key]
    # The reported front also weighs latency, which is wall time and moves under load: compare the
    # quality/cost front, which the cache must reproduce exactly.
    assert _quality_cost_front(one) == _quality_cost_front(two)


def _quality_cost_front(report: dict) -> set[str]:
    from iollm.paths.stats import pareto_front

    points = [(e["search"]["quality"], e["search"]["cost"]) for e in report["pareto"]]
    return {report["pareto"][i]["name"] for i in pareto_front(points)}


def test_budget_below_the_space_is_an_error() -> None:
    with pytest.raises(SearchError, match="cannot evaluate each"):
        run_search(RecordedClient(synthetic), make_suite(), budget=10)


def test_schedule_fits_the_budget() -> None:
    for n, tasks, budget in ((53, 32, 339), (53, 40, 424), (11, 4, 20), (28, 6, 40)):
        schedule = plan_schedule(n, tasks, budget)
        assert schedule.projected <= budget or (schedule.first_batch, schedule.eta) == (1, 8)
    assert plan_schedule(53, 32, 53 * 32).eta == 2


def test_race_respects_the_budget() -> None:
    suite = make_suite(40)
    space = build_space(MODELS, "numeric", PRICES)
    evaluator = Evaluator(RecordedClient(synthetic), PRICES, workers=8)
    finalists, rounds, _ = asyncio.run(race(space, suite.tasks, evaluator, budget=200))
    assert evaluator.spent["search"] == sum(r.evaluated for r in rounds) <= 200
    assert finalists and all(
        len(evaluator.records(c, suite.tasks)) == rounds[-1].tasks_seen for c in finalists
    )


# ---------------------------------------------------------------------------------------------------
# The unit of work and the executor's branches


def test_unit_of_work_is_json_round_trippable() -> None:
    suite = make_suite(6)
    candidate = next(
        c for c in build_space(MODELS, "numeric", PRICES) if c.name == "cascade:direct(small>big)"
    )
    graph = json.loads(json.dumps(candidate.graph))
    result = asyncio.run(evaluate_unit_async(graph, suite.tasks, RecordedClient(synthetic), PRICES))
    assert json.loads(json.dumps(result)) == result
    assert [r["id"] for r in result["tasks"]] == [t.id for t in suite.tasks]
    assert {"score", "cost", "latency_s", "calls_made", "calls_cached"} <= set(result["tasks"][0])
    assert prices_from_json(json.loads(json.dumps(prices_to_json(PRICES)))) == PRICES


def test_verify_template_refines_only_on_failure() -> None:
    """The route gates the refiner: it runs when the examples fail, and only then."""
    prompt = 'def add(a, b):\n    """\n    >>> add(1, 2)\n    3\n    """\n'
    task = Task(
        "code/0",
        prompt,
        "assert add(2, 2) == 4",
        "python_tests",
        meta={"prompt": prompt, "entry_point": "add"},
    )

    def coder(model: str, text: str, params: dict[str, Any]) -> str:
        if "failed its checks" in text:
            return "```python\ndef add(a, b):\n    return a + b\n```"
        body = "a + b" if model == BIG else "a - b"
        return f"```python\n{prompt}    return {body}\n```"

    space = build_space(MODELS, "python_tests", PRICES)
    for model, refined in ((BIG, False), (SMALL, True)):
        candidate = next(c for c in space if c.name == f"verify({model.split('/')[1]})")
        result = asyncio.run(
            Executor(RecordedClient(coder), PRICES).run(parse_graph(candidate.graph), task.input)
        )
        assert (result.nodes["refine"].status == "ok") is refined
        assert result.nodes["check"].output.startswith("FAIL" if refined else "PASS")
        assert check(task, result.answer).passed


# ---------------------------------------------------------------------------------------------------
# Statistics


def test_bootstrap_and_bounds_sanity() -> None:
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0, 1.0)
    scores = [0.0, 1.0] * 50
    mean, low, high = bootstrap_ci(scores)
    assert mean == 0.5 and 0.38 < low < 0.45 and 0.55 < high < 0.62
    assert bootstrap_ci(scores) == (mean, low, high)  # fixed seed: reruns agree exactly
    assert paired_bootstrap(scores, scores) == (0.0, 0.0, 0.0)
    better = [1.0] * 100
    delta, d_low, _ = paired_bootstrap(better, scores)
    assert delta == 0.5 and d_low > 0.35
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])
    low1, high1 = wilson(5, 10)
    low2, high2 = wilson(50, 100)
    assert low1 < low2 < 0.5 < high2 < high1
    assert wilson(0, 3)[0] == 0.0 and wilson(3, 3)[1] == 1.0
    graded = bounds([0.5, 0.25, 0.75, 0.5])
    assert graded.low < graded.mean < graded.high
    assert pareto_front([(0.9, 10, 1), (0.8, 5, 1), (0.7, 7, 1), (0.9, 10, 1)]) == [0, 1, 3]


# ---------------------------------------------------------------------------------------------------
# Leaderboard rules


@pytest.fixture()
def db(tmp_path: Path):
    database = open_database(tmp_path / "node.sqlite")
    database.create(leaderboard_metadata)
    yield database
    database.dispose()


def _graph(model: str) -> dict[str, Any]:
    return next(c for c in build_space([model], "numeric") if c.template == "single").graph


def test_leaderboard_breakthrough_rules(db) -> None:
    suite, split = "gsm8k", "f" * 64
    base = [1.0] * 60 + [0.0] * 40
    first = submit(db, suite, "alice", _graph(SMALL), base, split, 120)
    assert first["record"] and first["breakthrough"] is None and "first" in first["reason"]
    small_gain = [1.0] * 61 + [0.0] * 39  # +0.01 < margin 0.02
    assert not submit(db, suite, "bob", _graph(MID), small_gain, split, 100)["record"]
    big_gain = [1.0] * 75 + [0.0] * 25
    copy = submit(db, suite, "carol", _graph(SMALL), big_gain, split, 100)  # the holder's graph again
    assert not copy["record"] and copy["breakthrough"] is None and "earlier submission wins" in copy["reason"]
    win = submit(db, suite, "dave", _graph(BIG), big_gain, split, 300, idempotency_key="k1")
    assert win["record"] and win["breakthrough"]["improvement"] == pytest.approx(0.15)
    assert (
        win["breakthrough"]["ci_low"] > 0
        and win["breakthrough"]["previous_submission_id"] == first["submission"]["id"]
    )
    again = submit(db, suite, "dave", _graph(BIG), big_gain, split, 300, idempotency_key="k1")
    assert again["replayed"] and again["submission"]["id"] == win["submission"]["id"]
    board = leaderboard(db, suite)
    assert board["holder"]["designer"] == "dave" and board["submissions"][0]["rank"] == 1
    assert len(board["submissions"]) == 4
    events = list_breakthroughs(db)
    assert [e["designer"] for e in events] == ["dave"] and events[0]["status"] == "pending"
    assert list_breakthroughs(db, since_id=events[0]["id"]) == []
    noisy = [1.0] * 62 + [0.0] * 38  # beats the new holder's 0.75? no: below
    assert not submit(db, suite, "erin", _graph(MID) | {"name": "x"}, noisy, split, 50)["record"]


def test_leaderboard_margin_and_interval(db) -> None:
    suite, split = "s", "a" * 64
    submit(db, suite, "alice", _graph(SMALL), [0.0] * 10, split, 1)
    # +0.1 on 10 tasks: above a 0.02 margin but the interval includes 0
    one_more = [1.0] + [0.0] * 9
    assert not submit(db, suite, "bob", _graph(MID), one_more, split, 1)["record"]
    # a stricter node margin stops an otherwise clear improvement
    clear = [1.0] * 5 + [0.0] * 5
    assert not submit(db, suite, "carol", _graph(BIG), clear, split, 1, margin=0.6)["record"]
    assert submit(
        db, suite, "dave", _graph(BIG) | {"description": "same graph, other text"}, clear, split, 1
    )["reason"]
    other_split = submit(db, suite, "erin", _graph(BIG) | {"name": "n"}, [1.0] * 3, "b" * 64, 1)
    assert other_split["record"]  # first on its own split
    from iollm.protocol import ProtocolError

    with pytest.raises(ProtocolError, match="has 10 tasks"):
        submit(db, suite, "frank", _graph(MID), [1.0] * 11, split, 1)
    with pytest.raises(ProtocolError, match="between 0 and 1"):
        submit(db, suite, "frank", _graph(MID), [2.0] * 10, split, 1)
    with pytest.raises(ProtocolError, match="invalid graph"):
        submit(db, suite, "frank", {"nodes": []}, [1.0] * 10, split, 1)


def test_default_budget_never_exceeds_a_fifth_of_exhaustive() -> None:
    for n in (41, 45, 64, 80):  # 41 and 45 give 1113 and 1219 evaluations: rounding would overshoot
        search = Search(SearchConfig(MODELS, make_suite(n), workers=8), RecordedClient(synthetic), PRICES)
        assert search.budget <= search.exhaustive / 5 or search.budget == len(search.space)
