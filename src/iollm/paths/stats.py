"""Statistics the search and the leaderboard decide with: confidence bounds for [0, 1] scores, percentile
bootstrap intervals (plain and paired), and Pareto fronts.

Why two kinds of interval: racing needs cheap bounds it can recompute every round for every candidate
(Wilson for pass/fail scores, empirical Bernstein for graded ones); final figures and records use the
bootstrap with a fixed seed so that a report and a rerun of it print the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20_250_101


@dataclass(frozen=True)
class Bounds:
    """Mean score of ``n`` tasks with a lower and an upper confidence bound (all within [0, 1])."""

    mean: float
    low: float
    high: float
    n: int


def _z(confidence: float) -> float:
    """Two-sided normal quantile (0.95 -> 1.96) without scipy."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: sound at n = 1 and at 0 or n successes."""
    if n <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def empirical_bernstein(scores: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Maurer-Pontil empirical Bernstein interval for scores in [0, 1] (graded scores, small n)."""
    n = len(scores)
    if n <= 1:
        return 0.0, 1.0
    mean = sum(scores) / n
    variance = sum((s - mean) ** 2 for s in scores) / (n - 1)
    log_term = math.log(4 / (1 - confidence))  # two-sided: delta/2 per side
    half = math.sqrt(2 * variance * log_term / n) + 7 * log_term / (3 * (n - 1))
    return max(0.0, mean - half), min(1.0, mean + half)


def bounds(scores: Sequence[float], confidence: float = 0.95) -> Bounds:
    """Confidence bounds of the mean: Wilson when every score is 0 or 1, empirical Bernstein otherwise."""
    n = len(scores)
    if n == 0:
        return Bounds(0.0, 0.0, 1.0, 0)
    mean = sum(scores) / n
    if all(s in (0.0, 1.0) for s in scores):
        low, high = wilson(sum(scores), n, confidence)
    else:
        low, high = empirical_bernstein(scores, confidence)
    return Bounds(mean, min(low, mean), max(high, mean), n)


def bootstrap_ci(
    scores: Sequence[float],
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap of the mean with a fixed seed, so reruns agree exactly."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)


def paired_bootstrap(
    new: Sequence[float],
    old: Sequence[float],
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(mean difference, low, high) of ``new - old`` on the same tasks, resampling tasks jointly."""
    if len(new) != len(old):
        raise ValueError(f"paired scores need the same tasks: {len(new)} vs {len(old)} scores")
    difference = np.asarray(new, dtype=float) - np.asarray(old, dtype=float)
    return bootstrap_ci(difference.tolist(), confidence, resamples, seed)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` for (quality, cost, latency...): quality higher-or-equal, the rest
    lower-or-equal, one of them strictly better."""
    better_or_equal = a[0] >= b[0] and all(x <= y for x, y in zip(a[1:], b[1:], strict=True))
    strictly = a[0] > b[0] or any(x < y for x, y in zip(a[1:], b[1:], strict=True))
    return better_or_equal and strictly


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (first objective maximised, the others minimised).
    Exact duplicates are all kept."""
    return [
        i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)
    ]
