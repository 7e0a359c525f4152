"""The task suite a workflow is evaluated or searched on: a built-in suite by name, or tasks sent inline
(the editor's "paste a few tasks"). Files on the node's disk are not readable from the web on purpose."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ProtocolError
from ..paths.catalog import BUILTIN_SUITES, load_suite
from ..paths.suites import Suite, SuiteError, task_from_json

MAX_INLINE_TASKS = 1000


def suite_from_request(body: dict[str, Any]) -> Suite:
    tasks = body.get("tasks")
    if tasks:
        if not isinstance(tasks, list) or len(tasks) > MAX_INLINE_TASKS:
            raise ProtocolError(f"tasks must be a list of at most {MAX_INLINE_TASKS} task objects")
        try:
            parsed = [task_from_json(t if isinstance(t, dict) else {}) for t in tasks]
        except (SuiteError, ValueError) as exc:
            raise ProtocolError(f"bad task: {exc}") from exc
        return Suite(str(body.get("suite") or "inline"), "tasks sent with the request", parsed, "inline")
    name = str(body.get("suite") or "")
    if name not in BUILTIN_SUITES:
        known = ", ".join(BUILTIN_SUITES)
        raise ProtocolError(f"no built-in suite {name!r}; pick one of {known}, or send tasks inline")
    try:
        return load_suite(name)
    except SuiteError as exc:
        raise ProtocolError(f"{exc}") from exc


def first_tasks(suite: Suite, body: dict[str, Any]) -> Suite:
    """At most ``max_tasks`` tasks (default 20): an editor evaluation is a quick check, not a benchmark."""
    limit = int(body.get("max_tasks") or 20)
    if limit < 1:
        raise ProtocolError("max_tasks must be at least 1")
    return dataclasses.replace(suite, tasks=suite.tasks[:limit])
