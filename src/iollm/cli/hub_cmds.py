"""Hub commands: push, pull, ls, show, log, tag, mirror, store verify."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..protocol import LocalCache, pull, push
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

app = typer.Typer()
store_app = typer.Typer(help="Inspect the node's chunk store.")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


@app.command("push")
def push_cmd(
    path: Annotated[Path, typer.Argument(help="A file or a folder to publish.")],
    repo: Annotated[str, typer.Argument(help="namespace/name")],
    repo_type: TypeOpt = "model",
    revision: Annotated[str, typer.Option("--revision", "-r", help="Branch to commit to.")] = "main",
    tag: Annotated[str | None, typer.Option("--tag", help="Also tag the new commit.")] = None,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="Lineage: the model this derives from.")
    ] = None,
    relation: Annotated[
        str | None, typer.Option("--relation", help="Lineage: finetune, quantization, merge or adapter.")
    ] = None,
    license_: Annotated[
        str | None, typer.Option("--license", help="License identifier for the card.")
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish PATH as a new commit of REPO; only chunks the node lacks are sent.

    Example: iollm push ./my-model alice/my-model --tag v1
    """
    ctx = Ctx(endpoint, token, home, as_json)
    card = {
        k: v for k, v in {"base_model": base_model, "relation": relation, "license": license_}.items() if v
    }
    with errors(as_json), ctx.client() as client, transfer_progress(not as_json) as progress:
        result = push(
            client,
            path,
            repo,
            repo_type=repo_type,
            branch=revision,
            tag=tag,
            message=message,
            card=card,
            private=private,
            progress=progress,
        )
    emit(
        ctx,
        result,
        lambda r: stdout.print(
            f"pushed [bold]{r['repo']}[/bold]@{r['revision']} -> {r['commit']}: "
            f"sent {_size(r['bytes_sent'])} of {_size(r['bytes_total'])} "
            f"({r['chunks_sent']}/{r['chunks_total']} chunks) in {r['seconds']} s"
        ),
    )


@app.command("pull")
def pull_cmd(
    ref: Annotated[str, typer.Argument(help="namespace/name[@branch|tag|commit]")],
    dest: Annotated[Path | None, typer.Option("--dest", "-d", help="Folder to place the files in.")] = None,
    peer: Annotated[list[str] | None, typer.Option("--peer", help="More nodes to fetch chunks from.")] = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Only paths matching these globs.")
    ] = None,
    repo_type: TypeOpt = "model",
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a repository; every chunk and file is verified, and a rerun resumes.

    Example: iollm pull iollm/smollm2-135m-instruct --dest ./smollm2
    """
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json):
        repo, revision = split_ref(ref)
        clients = [ctx.client()] + [ctx.client(p) for p in peer or []]
        cache = LocalCache(ctx.home / "cache")
        matcher = (lambda p: any(fnmatch.fnmatchcase(p, g) for g in include)) if include else None
        try:
            with transfer_progress(not as_json) as progress:
                result = pull(
                    clients,
                    repo_type,
                    repo,
                    revision or "main",
                    cache,
                    dest,
                    include=matcher,
                    progress=progress,
                )
        finally:
            for client in clients:
                client.close()
            cache.close()
    emit(
        ctx,
        result,
        lambda r: stdout.print(
            f"pulled [bold]{r['repo']}[/bold]@{r['commit'][:12]} into {r['path']}: {r['files']} file(s), "
            f"received {_size(r['bytes_received'])} of {_size(r['bytes_total'])} in {r['seconds']} s"
        ),
    )


@app.command("ls")
def ls_cmd(
    repo_type: Annotated[str | None, typer.Option("--type", "-t")] = None,
    search: Annotated[str | None, typer.Option("--search", "-s")] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List repositories you can see. Example: iollm ls --type model"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        repos = client.list_repos(repo_type, search)

    def show(rows: list[dict[str, Any]]) -> None:
        table = Table("repository", "type", "size", "params", "quant", "head", "private")
        for r in rows:
            card = r.get("card") or {}
            table.add_row(
                r["id"],
                r["type"],
                _size(r.get("size")),
                card.get("parameter_size") or "-",
                card.get("quantization") or "-",
                (r.get("head") or "-")[:12],
                "yes" if r["private"] else "",
            )
        stdout.print(table)

    emit(ctx, {"repos": repos}, lambda d: show(d["repos"]))


@app.command("show")
def show_cmd(
    ref: Annotated[str, typer.Argument(help="namespace/name[@revision]")],
    repo_type: TypeOpt = "model",
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A repository's card, files and refs. Example: iollm show iollm/gemma-3-270m"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        repo, revision = split_ref(ref)
        info = client.repo_info(repo_type, repo, revision)

    def human(i: dict[str, Any]) -> None:
        stdout.print(f"[bold]{i['id']}[/bold] ({i['type']}{', private' if i['private'] else ''})")
        if "commit" in i:
            stdout.print(f"commit {i['commit']}")
        card = i.get("card") or {}
        for key in (
            "architecture",
            "parameter_size",
            "parameters",
            "quantization",
            "context_length",
            "chat_template",
            "license",
            "format",
            "base_model",
        ):
            if card.get(key) is not None:
                stdout.print(f"  {key:15} {card[key]}")
        for link in i.get("lineage") or []:
            stdout.print(f"  lineage         {link.get('relation') or 'derived from'} {link['repo']}")
        table = Table("file", "size", "sha256")
        for f in i.get("files", []):
            table.add_row(f["path"], _size(f["size"]), f["sha256"][:16])
        stdout.print(table)
        for kind in ("branches", "tags"):
            for name, commit in i["refs"][kind].items():
                stdout.print(f"  {kind[:-1] if kind != 'branches' else 'branch':7} {name} -> {commit[:12]}")

    emit(ctx, info, human)


@app.command("log")
def log_cmd(
    ref: Annotated[str, typer.Argument(help="namespace/name[@revision]")],
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    repo_type: TypeOpt = "model",
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """History of a branch, newest first. Example: iollm log alice/my-model"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        repo, revision = split_ref(ref)
        commits = client.log(repo_type, repo, revision, limit)

    def human(d: dict[str, Any]) -> None:
        for c in d["commits"]:
            stdout.print(
                f"[yellow]{c['commit'][:12]}[/yellow] {c['created_at'][:19]} {c['author']}: {c['message']}"
            )

    emit(ctx, {"commits": commits}, human)


@app.command("tag")
def tag_cmd(
    repo: Annotated[str, typer.Argument(help="namespace/name")],
    revision: Annotated[str, typer.Argument(help="Branch, tag or commit to tag.")],
    tag: Annotated[str, typer.Argument(help="The new tag.")],
    repo_type: TypeOpt = "model",
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Name a commit. Example: iollm tag alice/my-model main v1.0"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.tag(repo_type, repo, revision, tag)
    emit(ctx, result, lambda r: stdout.print(f"tagged {r['commit'][:12]} as {r['tag']}"))


@app.command("mirror")
def mirror_cmd(
    upstream: Annotated[str, typer.Argument(help="URL of the node to copy from.")],
    repo: Annotated[str, typer.Argument(help="namespace/name")],
    repo_type: TypeOpt = "model",
    upstream_token: Annotated[str | None, typer.Option("--upstream-token")] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the node at --endpoint replicate REPO (all refs and history) from UPSTREAM.

    Example: iollm mirror http://10.0.0.2:8700 iollm/gemma-3-270m
    """
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.mirror(upstream, repo, repo_type, upstream_token)
    emit(
        ctx,
        result,
        lambda r: stdout.print(
            f"mirrored {r['repo']} from {r['upstream']}: {r['commits_copied']} commit(s), "
            f"{_size(r['bytes_fetched'])} fetched in {r['seconds']} s"
        ),
    )


@store_app.command("verify")
def store_verify_cmd(
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every chunk in the node's store and name any damaged pack. Exit 1 if damage is found."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        report = client.verify_store()

    def human(r: dict[str, Any]) -> None:
        state = "[green]ok[/green]" if r["ok"] else "[red]DAMAGED[/red]"
        stdout.print(f"store {state}: {r['chunks']} chunks, {_size(r['bytes'])} in {r['packs']} pack(s)")
        for pack in r["damaged_packs"]:
            stdout.print(f"  damaged pack: {pack}")
        for chunk in r["damaged_chunks"][:20]:
            stdout.print(f"  {chunk['pack']}: chunk {chunk['chunk'][:16]} {chunk['reason']}")

    emit(ctx, report, human)
    if not report["ok"]:
        raise typer.Exit(1)
