"""Reproduce published benchmark figures of the packaged models with ``iollm eval`` through a real node.

The baseline of each row is the figure its maker published (model card or technical report); the row
reports our score, its 95 % interval, and whether the published figure lies inside it. Sample sizes
keep each interval within about +-5 points where the suite is large enough.

IOLLM_BENCH_EVAL_ONLY=comma,separated,row,names runs a subset, IOLLM_BENCH_EVAL_LIMITS=row=N,... changes
a row's sample size (the first N of the same fixed order, so a smaller sample reuses a larger one's items);
item results are cached (``~/.cache/iollm/evals``), so an interrupted run resumes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from _harness import BenchNode, emit, scratch

SMOL, GEMMA, QWEN = "iollm/smollm2-135m-instruct", "iollm/gemma-3-270m", "iollm/qwen2.5-coder-0.5b-instruct"

# name: (model, task, limit, extra args, published %, source of the published figure and its setting)
ROWS: dict[str, tuple[str, str, int | None, tuple[str, ...], float, str]] = {
    "qwen-humaneval": (
        QWEN,
        "humaneval",
        None,
        (),
        61.6,
        "Qwen2.5-Coder report tab. 16, EvalPlus HumanEval, greedy, chat",
    ),
    "qwen-mbpp": (
        QWEN,
        "mbpp",
        350,
        (),
        52.4,
        "Qwen2.5-Coder report tab. 16, EvalPlus MBPP (378 items), greedy, chat",
    ),
    "smol-arc-easy": (
        SMOL,
        "arc-easy",
        400,
        (),
        37.3,
        "SmolLM2-135M-Instruct card: ARC (average of easy+challenge), 0-shot lighteval acc_norm",
    ),
    "smol-arc-challenge": (
        SMOL,
        "arc-challenge",
        400,
        (),
        37.3,
        "SmolLM2-135M-Instruct card: ARC (average), 0-shot lighteval acc_norm",
    ),
    "smol-hellaswag": (
        SMOL,
        "hellaswag",
        400,
        (),
        40.9,
        "SmolLM2-135M-Instruct card: HellaSwag 0-shot lighteval acc_norm",
    ),
    "smol-piqa": (SMOL, "piqa", 400, (), 66.3, "SmolLM2-135M-Instruct card: PIQA 0-shot lighteval acc_norm"),
    "smol-mmlu": (
        SMOL,
        "mmlu-cloze",
        400,
        (),
        29.3,
        "SmolLM2-135M-Instruct card: MMLU (cloze) 0-shot lighteval acc_norm",
    ),
    "gemma-piqa": (GEMMA, "piqa", 400, (), 67.7, "Gemma 3 270M card: PIQA 0-shot"),
    "gemma-boolq": (GEMMA, "boolq", 400, (), 61.4, "Gemma 3 270M card: BoolQ 0-shot"),
    "gemma-arc-easy": (GEMMA, "arc-easy", 400, (), 57.7, "Gemma 3 270M card: ARC-e 0-shot"),
}


def limits_from_env() -> dict[str, int]:
    pairs = [p.split("=", 1) for p in os.environ.get("IOLLM_BENCH_EVAL_LIMITS", "").split(",") if p]
    return {name: int(n) for name, n in pairs}


def run_row(node: BenchNode, name: str) -> dict[str, Any]:
    model, task, limit, extra, published, source = ROWS[name]
    limit = limits_from_env().get(name, limit)
    args = ["eval", model, "--task", task, "--no-card", *extra]
    if limit is not None:
        args += ["--limit", str(limit)]
    started = time.monotonic()
    out = node.cli_json(*args)
    ours = 100 * out["score"]
    low, high = 100 * out["ci_low"], 100 * out["ci_high"]
    norm = None if out["score_norm"] is None else round(100 * out["score_norm"], 1)
    inside = [low <= published <= high]
    if norm is not None:
        inside.append(abs(norm - published) <= (high - low) / 2)
    return {
        "model": model,
        "task": task,
        "protocol": out["protocol"],
        "api": out["api"],
        "shots": out["shots"],
        "n": out["n"],
        "ours": round(ours, 1),
        "ci95": [round(low, 1), round(high, 1)],
        "ours_acc_norm": norm,
        "published": published,
        "published_setting": source,
        "gap": round(ours - published, 1),
        "gap_acc_norm": None if norm is None else round(norm - published, 1),
        "published_inside_ci": any(inside),
        "cached_items": out["cached"],
        "seconds": round(time.monotonic() - started, 1),
        "tokens": {"prompt": out["prompt_tokens"], "completion": out["completion_tokens"]},
    }


def main() -> None:
    only = [r for r in os.environ.get("IOLLM_BENCH_EVAL_ONLY", "").split(",") if r]
    names = only or list(ROWS)
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    with scratch("iollm-bench-eval-") as work:
        node = BenchNode(work / "node")
        try:
            rows = {name: run_row(node, name) for name in names}
        finally:
            node.stop()
    emit({"bench": "eval_published", "baseline": "figures published by each model's maker", "rows": rows})


if __name__ == "__main__":
    main()
