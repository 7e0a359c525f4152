"""Every command's --help renders: a help text that rich reads as markup (``mmlu[/subject]``) crashed
``iollm eval --help`` with a traceback, the first thing a newcomer types."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from iollm.cli import app


def _commands(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The command paths under a (typer-vendored) click group: ``()``, ``("eval",)``, ``("path", "search")``."""
    found = [prefix]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found.extend(_commands(sub, (*prefix, name)))
    return found


def test_every_command_help_renders() -> None:
    root = typer.main.get_command(app)
    paths = _commands(root)
    assert len(paths) > 60 and ("eval",) in paths
    runner = CliRunner()
    failed = {}
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        if result.exit_code != 0 or "Usage" not in result.output:
            failed[" ".join(path)] = repr(result.exception) if result.exception else result.output[-300:]
    assert not failed, failed
