"""Matrix-factorisation router (RouteLLM's ``mf``, over N models): P(model m answers task x correctly) =
sigmoid(v_m . (W f(x)) + b_m), with f the projected embedding; W, v and b are fitted by logistic loss on
the search split's per-task correctness of every model. The branch is the best prediction less a cost
penalty."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import Router, RouteSettings, register_router
from .features import check_state, fit_features, pick, transform

RANK = 8
STEPS = 400
RATE = 0.05
L2 = 1e-3


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def train(
    vectors: Sequence[Sequence[float]],
    correct: Sequence[Sequence[float]],
    models: Sequence[str],
    costs: Sequence[float],
    cost_weight: float = 0.0,
    seed: int = 0,
    rank: int = RANK,
    steps: int = STEPS,
) -> dict[str, Any]:
    """Router state fitted with Adam on the logistic loss (scores in [0, 1] are soft labels)."""
    y = np.asarray(correct, dtype=float)
    if y.shape != (len(vectors), len(models)):
        raise ValueError(f"scores are {y.shape}, expected {(len(vectors), len(models))}")
    features = fit_features(vectors, seed=seed)
    x = transform(features, vectors)
    rng = np.random.default_rng(seed)
    rate = np.clip(y.mean(axis=0), 0.02, 0.98)
    params = {
        "w": rng.standard_normal((x.shape[1], rank)) * 0.1,
        "v": rng.standard_normal((len(models), rank)) * 0.1,
        "b": np.log(rate / (1 - rate)),
    }
    moments = {k: (np.zeros_like(p), np.zeros_like(p)) for k, p in params.items()}
    for step in range(1, steps + 1):
        hidden = x @ params["w"]  # tasks x rank
        error = (_sigmoid(hidden @ params["v"].T + params["b"]) - y) / y.size  # d loss / d logit
        grads = {
            "w": x.T @ (error @ params["v"]) + L2 * params["w"],
            "v": error.T @ hidden + L2 * params["v"],
            "b": error.sum(axis=0),
        }
        for key, grad in grads.items():
            m, s = moments[key]
            m[...] = 0.9 * m + 0.1 * grad
            s[...] = 0.999 * s + 0.001 * grad * grad
            params[key] -= RATE * (m / (1 - 0.9**step)) / (np.sqrt(s / (1 - 0.999**step)) + 1e-8)
    return {
        "features": features,
        "models": list(models),
        "costs": [float(c) for c in costs],
        "cost_weight": float(cost_weight),
        "w": [[round(float(v), 5) for v in row] for row in params["w"]],
        "v": [[round(float(v), 5) for v in row] for row in params["v"]],
        "b": [round(float(v), 5) for v in params["b"]],
    }


def predict(state: Mapping[str, Any], vectors: Sequence[Sequence[float]]) -> np.ndarray:
    x = transform(state["features"], vectors)
    w, v, b = (np.asarray(state[k], dtype=float) for k in ("w", "v", "b"))
    return _sigmoid((x @ w) @ v.T + b)


def route(state: Mapping[str, Any], vector: Sequence[float]) -> str:
    return pick(state["models"], predict(state, [vector])[0], state["costs"], float(state["cost_weight"]))


def check(node: RouteSettings) -> None:
    state = check_state(node, ("w", "v", "b", "costs"))
    if len(state["v"]) != len(state["models"]) or len(state["b"]) != len(state["models"]):
        raise ValueError(f"route node {node.id!r}: mf state needs one factor and bias per model")


def choose(node: RouteSettings, subject: str, values: Mapping[str, str]) -> str:
    raise ValueError(f"route node {node.id!r}: the mf router routes on embeddings (run it in a workflow)")


def choose_vector(node: RouteSettings, vector: Sequence[float]) -> str:
    return route(node.get("state"), vector)


register_router(
    Router(
        "mf",
        "Pick the model a matrix-factorisation model of per-task correctness favours (embeddings).",
        check,
        choose,
        choose_vector,
    )
)
