"""Features shared by the learned routers: a model's embedding of the task, projected to a few dimensions
with a seeded random matrix (only the seed is stored), centred on the training items and unit-normed.

Why: pooled LLM embeddings share one large common direction (cosine similarities all near 1), so
centring is what makes neighbours meaningful; the projection keeps a router's state small enough to
publish inside the workflow JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DIMS = 64


def _matrix(input_dims: int, dims: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((input_dims, dims)) / np.sqrt(dims)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def fit_features(vectors: Sequence[Sequence[float]], dims: int = DIMS, seed: int = 0) -> dict[str, Any]:
    """The projection's settings for training vectors (JSON-ready: seed, sizes, the centre)."""
    raw = _unit(np.asarray(vectors, dtype=float))
    out = min(dims, raw.shape[1])
    projected = raw @ _matrix(raw.shape[1], out, seed)
    return {
        "input_dims": int(raw.shape[1]),
        "dims": int(out),
        "seed": int(seed),
        "mean": [round(float(v), 6) for v in projected.mean(axis=0)],
    }


def transform(settings: Mapping[str, Any], vectors: Sequence[Sequence[float]]) -> np.ndarray:
    """Vectors as router features (rows unit-normed, centred on the training items)."""
    raw = _unit(np.asarray(vectors, dtype=float))
    if raw.shape[1] != int(settings["input_dims"]):
        raise ValueError(
            f"embedding has {raw.shape[1]} dimensions; the router was trained on {settings['input_dims']}"
        )
    projected = raw @ _matrix(raw.shape[1], int(settings["dims"]), int(settings["seed"]))
    return _unit(projected - np.asarray(settings["mean"], dtype=float))


def check_state(node: Any, keys: Sequence[str]) -> dict[str, Any]:
    """The node's trained state, or ValueError naming what is missing (shared by ``check``)."""
    state = node.get("state")
    if not node.get("embed_model"):
        raise ValueError(f"route node {node.id!r}: a learned router needs embed_model")
    if not isinstance(state, dict):
        raise ValueError(f"route node {node.id!r}: a learned router needs its trained state")
    missing = [k for k in ("features", "models", *keys) if k not in state]
    if missing:
        raise ValueError(f"route node {node.id!r}: router state lacks {', '.join(missing)}")
    if not state["models"]:
        raise ValueError(f"route node {node.id!r}: router state names no models")
    return state


def pick(models: Sequence[str], predicted: np.ndarray, costs: Sequence[float], cost_weight: float) -> str:
    """The branch with the best predicted score less ``cost_weight`` x its relative cost; ties go to the
    model listed first (models are listed cheapest first)."""
    price = np.asarray(costs, dtype=float)
    relative = price / price.max() if price.size and price.max() > 0 else np.zeros(len(models))
    utility = predicted - cost_weight * relative
    return str(models[int(np.argmax(utility))])
