"""Simple baselines on held-out tasks: oracle router, random routing at equal cost, self-consistency size
at equal cost, and the plain verdict (LLMRouterBench: say when the chosen path does not beat them)."""

from __future__ import annotations

from iollm.paths.baselines import compare_all, oracle, random_mix, random_routing, self_consistency_k
from iollm.paths.candidate import Candidate


def rec(scores: list[float], cost: float) -> list[dict]:
    return [{"score": s, "cost": cost} for s in scores]


def cand(name: str) -> Candidate:
    return Candidate(name, "single", {"solver": name}, {"style": "direct"}, {})


def test_oracle_takes_the_best_model_per_task_at_the_cheapest_cost() -> None:
    figures = oracle({"a": rec([1, 0, 0, 1], 1.0), "b": rec([1, 1, 0, 0], 10.0)})
    assert figures["scores"] == [1, 1, 0, 1]
    assert figures["cost_per_task"] == (1 + 10 + 1 + 1) / 4


def test_random_routing_matches_the_target_cost() -> None:
    a, b, c = cand("a"), cand("b"), cand("c")
    stats = {
        "a": {"cost": 1.0, "quality": 0.3},
        "b": {"cost": 10.0, "quality": 0.5},
        "c": {"cost": 5.0, "quality": 0.2},
    }
    x, y, p = random_mix([a, b, c], stats, 4.0)
    assert (x.name, y.name) == ("a", "b") and abs((1 - p) * 1 + p * 10 - 4.0) < 1e-9
    figures = random_routing(x, y, p, rec([1, 0], 1.0), rec([0, 1], 10.0))
    assert abs(figures["cost_per_task"] - 4.0) < 0.01 and abs(sum(figures["scores"]) - 1.0) < 1e-9
    assert random_mix([a, b, c], stats, 0.5)[0].name == "a"  # below every cost: the cheapest alone


def test_self_consistency_k_at_equal_cost() -> None:
    assert self_consistency_k(10.0, 2.0, (3, 5)) == (5, True)
    assert self_consistency_k(7.0, 2.0, (3, 5)) == (3, True)
    assert self_consistency_k(2.0, 2.0, (3, 5)) == (3, False)


def test_verdict_says_plainly_when_the_chosen_path_does_not_beat_a_baseline() -> None:
    n = 100
    chosen = rec([1] * 60 + [0] * 40, 5.0)
    strong = rec([1] * 58 + [0] * 42, 5.0)  # a tie within noise
    weak = rec([1] * 20 + [0] * 80, 1.0)
    result = compare_all(
        cand("chosen"),
        chosen,
        {
            "best_single": ("strong", strong),
            "cheapest_model": ("weak", weak),
            "self_consistency_equal_cost": None,
            "oracle_router": oracle({"strong": strong, "weak": weak}),
        },
    )
    text = " ".join(result["verdict"])
    assert "does NOT beat best single" in text
    assert "beats cheapest model" in text
    assert "oracle router (ceiling)" in text
    assert result["baselines"]["cheapest_model"]["vs_chosen"]["beats"]
    assert result["baselines"]["best_single"]["vs_chosen"]["cost_ratio"] == 1.0
    assert result["chosen"]["n"] == n
