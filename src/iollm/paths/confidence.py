"""A model's confidence in its own answer, from the token log-probabilities of its completion: what a
logprob cascade escalates on (FrugalGPT fits the threshold; we fit it on the search split, see
``cascade_fit``).

Only the answer's tokens count where the completion names one (``Answer: ...`` on its last line, or the
whole of a short direct reply): a long, fluent chain of thought says little about its final number.
"""

from __future__ import annotations

from collections.abc import Sequence

METRICS = ("mean", "min")
_MARKER = "answer:"


def answer_tokens(logprobs: Sequence[tuple[str, float]]) -> list[float]:
    """Log-probabilities of the tokens after the last ``Answer:`` (all tokens when there is none)."""
    text = ""
    starts: list[int] = []
    for token, _ in logprobs:
        starts.append(len(text))
        text += token
    at = text.lower().rfind(_MARKER)
    if at < 0:
        return [lp for _, lp in logprobs]
    begin = at + len(_MARKER)
    tail = [lp for (token, lp), start in zip(logprobs, starts, strict=True) if start + len(token) > begin]
    return tail or [lp for _, lp in logprobs]


def confidence(logprobs: Sequence[tuple[str, float]] | None, metric: str = "mean") -> float | None:
    """Mean or min log-probability of the answer's tokens (<= 0; closer to 0 is surer); None without
    logprobs (an endpoint that does not return them)."""
    if metric not in METRICS:
        raise ValueError(f"confidence metric must be one of {', '.join(METRICS)}")
    if not logprobs:
        return None
    values = answer_tokens(logprobs)
    if not values:
        return None
    return sum(values) / len(values) if metric == "mean" else min(values)


def confidences(logprobs: Sequence[tuple[str, float]] | None) -> dict[str, float] | None:
    """Every metric at once (what a search records per evaluation, so thresholds fit without calls)."""
    if not logprobs:
        return None
    found = {m: confidence(logprobs, m) for m in METRICS}
    return {m: round(v, 5) for m, v in found.items() if v is not None} or None
