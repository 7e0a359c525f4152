"""One checkable task: what a suite holds and what a checker scores an output against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """One checkable task. ``id`` is stable across runs: suite name + index, or HumanEval's task_id."""

    id: str
    input: str
    target: str | tuple[str, ...]
    checker: str = "exact"
    choices: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def targets(self) -> tuple[str, ...]:
        """The acceptable answers, always as a tuple."""
        return (self.target,) if isinstance(self.target, str) else self.target

    def to_json(self) -> dict[str, Any]:
        """The JSONL form (``write_jsonl``); ``read_jsonl`` reads it back to an equal task."""
        row: dict[str, Any] = {"id": self.id, "input": self.input}
        row["target"] = self.target if isinstance(self.target, str) else list(self.target)
        row["checker"] = self.checker
        if self.choices:
            row["choices"] = list(self.choices)
        if self.meta:
            row["meta"] = self.meta
        return row
