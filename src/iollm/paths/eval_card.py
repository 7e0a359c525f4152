"""Eval results in a model card: the ``model-index`` block of README.md's YAML front matter.

It is the format the Hugging Face Hub shows and ``huggingface_hub`` reads back
(``ModelCard.load(...).data.eval_results``), so a score written by ``iollm eval`` is visible to every HF
tool. A new result replaces the one for the same data set and metric and keeps every other entry and the
card's text.
"""

from __future__ import annotations

from typing import Any

import yaml

from .eval_run import EvalReport

__all__ = ["card_with_result"]

_DATASET_NAMES = {
    "gsm8k": "GSM8K",
    "math500": "MATH-500",
    "mmlu": "MMLU",
    "mmlu-cloze": "MMLU",
    "arc-challenge": "ARC-Challenge",
    "arc-easy": "ARC-Easy",
    "hellaswag": "HellaSwag",
    "humaneval": "HumanEval",
    "mbpp": "MBPP",
    "winogrande": "WinoGrande",
    "piqa": "PIQA",
    "boolq": "BoolQ",
    "openbookqa": "OpenBookQA",
}


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a README; a README without front matter has an empty one."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end >= 0:
            meta = yaml.safe_load(text[4:end]) or {}
            if isinstance(meta, dict):
                return meta, text[end + 4 :].lstrip("\n")
    return {}, text


def _metric_name(report: EvalReport) -> str:
    how = report.protocol if report.protocol == "loglikelihood" else f"generate, {report.api}"
    return f"accuracy ({report.shots}-shot, {how})"


def _entry(report: EvalReport) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = [
        {
            "type": "accuracy",
            "name": _metric_name(report),
            "value": round(100 * report.score, 2),
            "verified": False,
        }
    ]
    if report.score_norm is not None:
        name = _metric_name(report).replace("accuracy", "accuracy per byte")
        metrics.append(
            {"type": "acc_norm", "name": name, "value": round(100 * report.score_norm, 2), "verified": False}
        )
    family = report.suite.split("/", 1)[0]
    return {
        "task": {"type": "text-generation", "name": "Text Generation"},
        "dataset": {
            "name": _DATASET_NAMES.get(report.suite, _DATASET_NAMES.get(family, report.suite)),
            "type": report.suite,
            "args": {"num_few_shot": report.shots, "limit": report.n},
        },
        "metrics": metrics,
        "source": {
            "name": f"iollm eval (n={report.n}, 95% CI {100 * report.ci_low:.1f}-{100 * report.ci_high:.1f}, commit {report.commit[:12]})",
            "url": "https://github.com/iollm/iollm",
        },
    }


def card_with_result(readme: str | None, model_name: str, report: EvalReport) -> str:
    """README text with ``report`` merged into its ``model-index`` (same data set and metric: replaced)."""
    meta, body = split_card(readme or "")
    index = meta.get("model-index")
    if not isinstance(index, list) or not index or not isinstance(index[0], dict):
        index = [{"name": model_name, "results": []}]
    model = index[0]
    model.setdefault("name", model_name)
    entry = _entry(report)
    wanted = (entry["dataset"]["type"], entry["metrics"][0]["name"])
    kept = [
        r
        for r in model.get("results") or []
        if not isinstance(r, dict)
        or ((r.get("dataset") or {}).get("type"), ((r.get("metrics") or [{}])[0] or {}).get("name")) != wanted
    ]
    model["results"] = [*kept, entry]
    meta["model-index"] = index
    body = body or f"# {model_name}\n"
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body
