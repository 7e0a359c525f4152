"""The node's account of a fine-tune from its job log: every run of the train unit, where it resumed,
how far it got and its last checkpoint (a killed run's steps past that checkpoint are the work redone)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..tables import logs

if TYPE_CHECKING:
    from ..jobs import JobServices

_START = re.compile(r"run (\w+) started on (\S+) \(attempt (\d+)")
_FROM = re.compile(r"resuming from step (\d+)")
_STEP = re.compile(r"run (\w+) step (\d+)/")
_CHECKPOINT = re.compile(r"run (\w+) checkpoint at step (\d+)")
_FAILED = re.compile(r"run (\w+) failed at step \d+: (.*)")


def runs_from_log(lines: list[str], result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of the train unit, in order: where it resumed, how far it got (completed steps), the
    last checkpoint it pushed. A killed run's steps past its last checkpoint are the work redone."""
    runs: dict[str, dict[str, Any]] = {}
    for line in lines:
        if match := _START.search(line):
            start = int(m.group(1)) if (m := _FROM.search(line)) else 0
            runs.setdefault(
                match.group(1),
                {
                    "run": match.group(1),
                    "provider": match.group(2),
                    "attempt": int(match.group(3)),
                    "resumed_from": start,
                    "reached": start,
                    "checkpointed": start,
                },
            )
        elif (match := _STEP.search(line)) and match.group(1) in runs:
            runs[match.group(1)]["reached"] = max(runs[match.group(1)]["reached"], int(match.group(2)))
        elif (match := _FAILED.search(line)) and match.group(1) in runs:
            runs[match.group(1)]["error"] = match.group(2)
        elif (match := _CHECKPOINT.search(line)) and match.group(1) in runs:
            runs[match.group(1)]["checkpointed"] = max(
                runs[match.group(1)]["checkpointed"], int(match.group(2))
            )
    final = runs.setdefault(
        result["run"],
        {
            "run": result["run"],
            "provider": result["provider"],
            "attempt": None,
            "resumed_from": result["resumed_from"],
        },
    )
    final.update(reached=result["steps"], checkpointed=result["steps"])
    for run in runs.values():
        run["executed"] = run["reached"] - run["resumed_from"]
    return list(runs.values())


def job_log_lines(services: JobServices, job_id: str) -> list[str]:
    with services.db.read() as conn:
        return [
            r[0] for r in conn.execute(select(logs.c.line).where(logs.c.job_id == job_id).order_by(logs.c.id))
        ]
