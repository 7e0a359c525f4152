"""What every command shares: endpoint/token options, one JSON document with --json, clear errors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..errors import IollmError, ProtocolError
from ..node.config import default_home
from ..protocol.client import DEFAULT_ENDPOINT, NodeClient

stdout = Console()
stderr = Console(stderr=True)

EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint", envvar="IOLLM_ENDPOINT", help=f"Node URL (default {DEFAULT_ENDPOINT})."),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="IOLLM_TOKEN", help="Bearer token (default: HOME/token).")
]
HomeOpt = Annotated[
    Path | None, typer.Option("--home", envvar="IOLLM_HOME", help="Home folder (default ~/.iollm).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
TypeOpt = Annotated[str, typer.Option("--type", "-t", help="Repository kind: model, dataset or space.")]


class Ctx:
    """Resolved connection settings for one command."""

    def __init__(self, endpoint: str | None, token: str | None, home: Path | None, as_json: bool) -> None:
        self.home = (home or default_home()).expanduser()
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.token = token or self._token_from_home()
        self.as_json = as_json

    def _token_from_home(self) -> str | None:
        try:
            return (self.home / "token").read_text().strip() or None
        except (FileNotFoundError, PermissionError):
            return None

    def client(self, endpoint: str | None = None) -> NodeClient:
        return NodeClient(endpoint or self.endpoint, self.token)


def emit(ctx: Ctx, data: Any, human: Callable[[Any], None] | None = None) -> None:
    """One JSON document with --json; otherwise the human rendering (or pretty JSON)."""
    if ctx.as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    elif human is not None:
        human(data)
    else:
        stdout.print_json(json.dumps(data, default=str))


def fail(message: str, as_json: bool, code: str = "error", exit_code: int = 1) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"error": {"message": message, "code": code}}) + "\n")
    stderr.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code)


@contextmanager
def errors(as_json: bool) -> Iterator[None]:
    """Turn node and protocol errors into one line on stderr and a non-zero exit."""
    try:
        yield
    except IollmError as exc:
        fail(exc.message, as_json, exc.code)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        fail(str(exc), as_json, "os_error")
    except KeyboardInterrupt:
        fail("interrupted", as_json, "interrupted", 130)


def split_ref(value: str) -> tuple[str, str | None]:
    """'ns/name@rev' -> ('ns/name', 'rev')."""
    repo, _, rev = value.partition("@")
    if not repo:
        raise ProtocolError(f"invalid repository reference {value!r}: expected namespace/name[@revision]")
    return repo, rev or None


@contextmanager
def transfer_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A byte progress bar on stderr; yields the callback the transfer code calls."""
    if not enabled or not sys.stderr.isatty() or os.environ.get("IOLLM_NO_PROGRESS"):
        yield lambda phase, done, total: None
        return
    columns = (
        TextColumn("{task.description:>12}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update
