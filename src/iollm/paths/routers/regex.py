"""The rules router: the first rule whose regular expression matches the subject names the branch,
else the node's ``default`` branch."""

from __future__ import annotations

import re
from collections.abc import Mapping

from . import Router, RouteSettings, register_router


def check(node: RouteSettings) -> None:
    rules = node.get("rules")
    if not isinstance(rules, list) or not rules or not node.get("default"):
        raise ValueError(f"route node {node.id!r} needs rules [{{branch, pattern}}] and a default branch")
    for rule in rules:
        try:
            re.compile(str(rule.get("pattern", "")))
        except re.error as exc:
            raise ValueError(f"route node {node.id!r}: bad pattern: {exc}") from exc


def choose(node: RouteSettings, subject: str, values: Mapping[str, str]) -> str:
    for rule in node.get("rules"):
        if re.search(str(rule["pattern"]), subject, flags=re.IGNORECASE | re.MULTILINE):
            return str(rule["branch"])
    return str(node.get("default"))


register_router(
    Router(
        "regex",
        "Pick a branch by matching rules (regular expressions) against the input.",
        check,
        choose,
    )
)
