"""Archive commands: ``iollm export`` and ``iollm import``, for moving models to nodes without network."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import Forbidden
from ..protocol import download_export, upload_import
from .common import (
    Ctx,
    EndpointOpt,
    HomeOpt,
    JsonOpt,
    TokenOpt,
    TypeOpt,
    emit,
    errors,
    split_ref,
    stdout,
    transfer_progress,
)
from .hub_cmds import _size

app = typer.Typer()


def _commit_lines(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        ref = f" -> {row['ref_kind']} {row['ref']}" if row.get("ref") else ""
        stdout.print(f"  {row['type']} {row['repo']}@{row['commit'][:12]}{ref}")


@app.command("export")
def export_cmd(
    repo: Annotated[str, typer.Argument(help="namespace/name[@revision]")],
    file: Annotated[Path, typer.Argument(help="The archive to write (a tar of an OCI image layout).")],
    repo_type: TypeOpt = "model",
    revision: Annotated[
        str | None, typer.Option("--revision", "-r", help="Branch, tag or commit (default main).")
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write REPO, and every commit it builds on, to a self-contained archive for `iollm import`.

    Example: iollm export alice/my-model my-model.tar --revision v1
    """
    from ..hub.archive import list_archive  # the hub package is heavy: load it only when used

    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client, transfer_progress(not as_json) as progress:
        repo_id, at = split_ref(repo)
        result = download_export(
            client, repo_type, repo_id, revision or at or "main", file, progress, list_commits=list_archive
        )

    def human(r: dict[str, Any]) -> None:
        stdout.print(
            f"exported {len({c['commit'] for c in r['commits']})} commit(s), {_size(r['bytes'])} "
            f"to {r['path']} in {r['seconds']} s\n  sha256 {r['sha256']}"
        )
        _commit_lines(r["commits"])

    emit(ctx, result, human)


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="An archive written by `iollm export`.")],
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Load an archive into the node; every blob and commit is verified before anything is stored.

    Importing the same archive again changes nothing.

    Example: iollm import my-model.tar
    """
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client, transfer_progress(not as_json) as progress:
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such archive")
        if client.whoami().get("scope") != "write":  # before sending gigabytes, not after
            raise Forbidden("this token is read-only; importing needs a write token")
        result = upload_import(client, file, progress)

    def human(r: dict[str, Any]) -> None:
        stdout.print(
            f"imported {r['commits_new']} new commit(s) from {r['path']} ({_size(r['bytes'])}, "
            f"{_size(r['bytes_new'])} new) in {r['seconds']} s"
        )
        _commit_lines(r["imported"])

    emit(ctx, result, human)
