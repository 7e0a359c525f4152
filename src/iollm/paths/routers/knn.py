"""kNN router: each model's predicted correctness on a task is the similarity-weighted share of the k
nearest training tasks (by the embedding of the task) it got right, shrunk toward its overall rate;
the branch is the model with the best prediction less a cost penalty. RouterBench's kNN router."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import Router, RouteSettings, register_router
from .features import check_state, fit_features, pick, transform

PRIOR_WEIGHT = 1.0  # pseudo-neighbours at the overall rate: a lone neighbour cannot decide alone


def train(
    vectors: Sequence[Sequence[float]],
    correct: Sequence[Sequence[float]],
    models: Sequence[str],
    costs: Sequence[float],
    k: int = 7,
    cost_weight: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Router state from training tasks' embeddings and per-model scores (rows: tasks, columns: models)."""
    scores = np.asarray(correct, dtype=float)
    if scores.shape != (len(vectors), len(models)):
        raise ValueError(f"scores are {scores.shape}, expected {(len(vectors), len(models))}")
    features = fit_features(vectors, seed=seed)
    points = transform(features, vectors)
    return {
        "features": features,
        "models": list(models),
        "costs": [float(c) for c in costs],
        "k": int(k),
        "cost_weight": float(cost_weight),
        "points": [[round(float(v), 4) for v in row] for row in points],
        "scores": [[round(float(v), 4) for v in row] for row in scores],
    }


def predict(state: Mapping[str, Any], vectors: Sequence[Sequence[float]]) -> np.ndarray:
    """Predicted score per (task, model)."""
    points = np.asarray(state["points"], dtype=float)
    scores = np.asarray(state["scores"], dtype=float)
    prior = scores.mean(axis=0)
    queries = transform(state["features"], vectors)
    similarity = queries @ points.T
    k = max(1, min(int(state["k"]), len(points)))
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    out = np.empty((len(queries), scores.shape[1]))
    for row, index in enumerate(nearest):
        weight = np.clip(similarity[row, index], 0.0, None) + 1e-6
        out[row] = (weight @ scores[index] + PRIOR_WEIGHT * prior) / (weight.sum() + PRIOR_WEIGHT)
    return out


def route(state: Mapping[str, Any], vector: Sequence[float]) -> str:
    return pick(state["models"], predict(state, [vector])[0], state["costs"], float(state["cost_weight"]))


def check(node: RouteSettings) -> None:
    state = check_state(node, ("points", "scores", "costs", "k"))
    if len(state["points"]) != len(state["scores"]) or not state["points"]:
        raise ValueError(f"route node {node.id!r}: knn state needs as many score rows as points")


def choose(node: RouteSettings, subject: str, values: Mapping[str, str]) -> str:
    raise ValueError(f"route node {node.id!r}: the knn router routes on embeddings (run it in a workflow)")


def choose_vector(node: RouteSettings, vector: Sequence[float]) -> str:
    return route(node.get("state"), vector)


register_router(
    Router(
        "knn",
        "Pick the model that got the most similar training tasks right (embeddings, k nearest).",
        check,
        choose,
        choose_vector,
    )
)
