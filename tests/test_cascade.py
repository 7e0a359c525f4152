"""Logprob cascades: confidence from the answer's token log-probabilities, thresholds fitted on the search
split under a cost cap (FrugalGPT), and the cascade node escalating on them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from iollm.paths.clients import RecordedClient
from iollm.paths.confidence import answer_tokens, confidence
from iollm.paths.executor import Executor
from iollm.paths.graph import GraphError, parse_graph
from iollm.paths.learned import Table, fit_cascade, learn_cascades, run_cascade
from iollm.paths.space import build_space
from iollm.paths.task import Task

MODELS = ["m/cheap", "m/strong"]


def test_confidence_reads_the_answer_tokens() -> None:
    tokens = [("Let", -2.0), (" me", -3.0), ("\nAnswer", -0.1), (":", 0.0), (" 4", -0.2), ("2", -0.4)]
    assert answer_tokens(tokens) == [-0.2, -0.4]
    assert confidence(tokens, "mean") == pytest.approx(-0.3)
    assert confidence(tokens, "min") == pytest.approx(-0.4)
    assert confidence([("42", -0.5)]) == -0.5  # a direct reply: all its tokens
    assert confidence(None) is None


def table(n: int = 200, seed: int = 0) -> Table:
    """The cheap model is right exactly when it is confident (mean logprob > -1), half the time; the
    strong one is right 80 % of the time at 10x the cost."""
    rng = np.random.default_rng(seed)
    sure = rng.random(n) < 0.5
    conf = np.where(sure, rng.uniform(-0.9, 0.0, n), rng.uniform(-4.0, -1.1, n))
    scores = np.stack([sure.astype(float), (rng.random(n) < 0.8).astype(float)], axis=1)
    singles = [
        c for c in build_space(MODELS, "exact") if c.template == "single" and c.params["style"] == "direct"
    ]
    return Table(
        MODELS,
        singles,
        [Task(f"t{i}", f"q{i}", "x", "exact") for i in range(n)],
        scores,
        np.tile([10.0, 100.0], (n, 1)),
        np.tile([0.1, 1.0], (n, 1)),
        {
            "mean": np.stack([conf, np.full(n, -0.1)], axis=1),
            "min": np.stack([conf - 1, np.full(n, -0.2)], axis=1),
        },
    )


def test_threshold_fit_beats_both_models_within_the_cap() -> None:
    t = table()
    fit = fit_cascade(t, (0, 1), range(200), cap=100.0)
    assert fit is not None
    scores, costs, _ = run_cascade(t, fit, range(200))
    assert scores.mean() > t.scores[:, 1].mean() + 0.05  # beats the strong model alone
    assert costs.mean() < 100.0  # at less than its cost
    # a cap below any escalation leaves only the cheap model
    tight = fit_cascade(t, (0, 1), range(200), cap=10.0)
    assert tight is not None and run_cascade(t, tight, range(200))[1].mean() == 10.0


def test_learned_cascades_are_cross_validated_graphs() -> None:
    t = table()
    found = learn_cascades(t, "direct", {"equal-cost": 100.0, "half-cost": 50.0}, seed=0)
    assert {c.params["cost_cap"] for c, _ in found} == {"equal-cost", "half-cost"}
    for candidate, figures in found:
        parse_graph(candidate.graph)
        assert figures["cross_validated"]
    equal = next(f for c, f in found if c.params["cost_cap"] == "equal-cost")
    assert equal["quality"] > t.scores[:, 1].mean()


def test_cascade_node_escalates_below_its_threshold() -> None:
    graph = parse_graph(
        {
            "nodes": [
                {
                    "id": "c",
                    "kind": "cascade",
                    "models": MODELS,
                    "prompt": "{{input}}",
                    "check": "logprob",
                    "threshold": [-1.0],
                    "params": {"logprobs": True},
                },
                {"id": "out", "kind": "output"},
            ],
            "edges": [{"from": "c", "to": "out"}],
        }
    )

    def reply(model: str, prompt: str, params: dict) -> tuple[str, list]:
        if model == "m/cheap":
            return ("cheap", [("cheap", -0.2 if prompt == "easy" else -3.0)])
        return ("strong", [("strong", -0.1)])

    executor = Executor(RecordedClient(reply))
    assert asyncio.run(executor.run(graph, "easy")).answer == "cheap"
    hard = asyncio.run(executor.run(graph, "hard"))
    assert hard.answer == "strong" and hard.nodes["c"].detail["escalations"] == 1
    # an endpoint without logprobs: unsure, so it escalates
    plain = Executor(RecordedClient(lambda m, p, params: m))
    assert asyncio.run(plain.run(graph, "easy")).answer == "m/strong"


def test_bad_logprob_threshold_is_refused() -> None:
    node = {
        "id": "c",
        "kind": "cascade",
        "models": MODELS,
        "prompt": "{{input}}",
        "check": "logprob",
        "threshold": 0.5,
    }
    with pytest.raises(GraphError, match="log-probability"):
        parse_graph({"nodes": [node, {"id": "out", "kind": "output"}], "edges": [{"from": "c", "to": "out"}]})


def test_space_has_mixture_of_agents_sharing_single_calls() -> None:
    from iollm.paths.call_plan import call_signatures

    space = build_space(["m/a", "m/b", "m/c"], "numeric")
    moa = [c for c in space if c.template == "moa"]
    assert len(moa) == 3
    step = [c for c in space if c.template == "single" and c.params["style"] == "step"]
    proposals = set(call_signatures(moa[0].graph)[:3])
    assert proposals == {call_signatures(c.graph)[0] for c in step}  # proposers are the single calls
