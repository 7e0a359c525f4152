"""Environment commands: ``iollm create NAME -f Envfile`` and ``iollm env export NAME``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ProtocolError
from ..protocol import FileEntry, NodeClient
from ..protocol.push import LocalFile, collect_files, upload_missing
from ..runtime.envfile import Envfile, EnvfileError, load_envfile
from ..store import digest_file
from .common import (
    Ctx,
    EndpointOpt,
    HomeOpt,
    JsonOpt,
    TokenOpt,
    emit,
    errors,
    fail,
    split_ref,
    stdout,
    transfer_progress,
)

app = typer.Typer()
env_app = typer.Typer(help="Environments: export the pinned Envfile that rebuilds one elsewhere.")

# The node writes these into the environment repository; a model folder's own copies are not weights.
_NOT_WEIGHTS = {"Envfile", "environment.json"}
CREATE_TIMEOUT = 3600.0  # creating may pin and build a Python environment


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig")


def _upload_weights(client: NodeClient, envfile: Envfile, progress: Any) -> tuple[list[FileEntry], int]:
    """FROM a local path: send the chunks the node lacks; returns the files' entries and bytes sent."""
    files: list[LocalFile] = [
        f for f in collect_files(Path(envfile.base.path or "")) if f.path not in _NOT_WEIGHTS
    ]
    total = sum(f.source.stat().st_size for f in files)
    done = 0

    def hashed(n: int) -> None:
        nonlocal done
        done += n
        progress("hashing", done, total)

    for local in files:
        local.digest = digest_file(local.source, progress=hashed)
    sent = upload_missing(client, files, progress)
    entries = [FileEntry.from_digest(f.path, f.digest) for f in files if f.digest is not None]
    return entries, sent


@app.command("create")
def create_cmd(
    name: Annotated[str, typer.Argument(help="namespace/name, or a bare name in your namespace")],
    file: Annotated[Path, typer.Option("--file", "-f", help="The Envfile (or Ollama Modelfile).")] = Path(
        "Envfile"
    ),
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish an environment: a model repository that runs its base the way the Envfile says.

    Example: iollm create alice/pirate -f Envfile
    """
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json):
        try:
            envfile = load_envfile(file)  # instant, line-numbered errors before any network call
        except EnvfileError as exc:
            fail(str(exc), as_json, "invalid_envfile")
        text = _read_text(file)
        with NodeClient(ctx.endpoint, ctx.token, timeout=CREATE_TIMEOUT) as client:
            files: list[FileEntry] = []
            sent = 0
            if envfile.base.kind == "path":
                with transfer_progress(not as_json) as progress:
                    files, sent = _upload_weights(client, envfile, progress)
            result = client.create_environment(name, text, [f.model_dump(mode="json") for f in files])
    result["bytes_sent"] = sent
    for note in result.get("warnings") or []:
        print(f"warning: {note}", file=sys.stderr)

    def human(r: dict[str, Any]) -> None:
        stdout.print(f"created [bold]{r['name']}[/bold] @ {r['commit']}", highlight=False)
        base = r["base"]
        if "repo" in base:
            where = f"{base['repo']}@{base['commit']}"
        elif base.get("self"):
            where = "weights uploaded with it"
        else:
            where = f"{base['url']} {base['model']}"
        stdout.print(f"  base      {where}", highlight=False)
        stdout.print(f"  backend   {r['backend']}", highlight=False)
        if r.get("requires"):
            state = "built" if r.get("venv_created") else "reused"
            stdout.print(f"  packages  {len(r['requires'])} pinned, venv {state} ({r['requires_key'][:12]})")
        stdout.print(f"  run it    iollm run {r['name']}", highlight=False)

    emit(ctx, result, human)


@env_app.command("export")
def export_cmd(
    name: Annotated[str, typer.Argument(help="namespace/name[@revision] of an environment")],
    revision: Annotated[str | None, typer.Option("--revision", "-r", help="Branch, tag or commit.")] = None,
    as_written: Annotated[
        bool, typer.Option("--as-written", help="The Envfile as it was written, not pinned.")
    ] = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the fully pinned Envfile (commit ids, package versions and hashes) that rebuilds NAME.

    Example: iollm env export alice/pirate > Envfile.lock
    """
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        repo, at = split_ref(name)
        if at and revision and at != revision:
            raise ProtocolError(f"{name} names revision {at} but --revision says {revision}; give one")
        params: dict[str, Any] = {"pinned": str(not as_written).lower()}
        if revision or at:
            params["revision"] = revision or at
        ns, _, short = repo.partition("/")
        if not short:
            raise ProtocolError(f"invalid environment name {name!r}: expected namespace/name")
        result = client.environment_envfile(ns, short, params)
    emit(ctx, result, lambda r: sys.stdout.write(r["envfile"]))
