"""``iollm up``: start a node."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..node.config import DEFAULT_PORT, NodeConfig, default_home
from .common import JsonOpt, fail, stdout

app = typer.Typer()


@app.command("up")
def up_cmd(
    home: Annotated[Path | None, typer.Option("--home", envvar="IOLLM_HOME", help="Home folder.")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p")] = DEFAULT_PORT,
    no_seed: Annotated[bool, typer.Option("--no-seed", help="Do not publish the packaged models.")] = False,
    upstream: Annotated[
        list[str] | None,
        typer.Option("--upstream", help="Pull repositories this node lacks from these nodes."),
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", help="Database URL (default: SQLite in the home).")
    ] = None,
    anonymous_inference: Annotated[
        bool, typer.Option("--anonymous-inference", help="Allow inference without a token (local use).")
    ] = False,
    memory_budget: Annotated[
        int | None,
        typer.Option(
            "--memory-budget", help="Bytes of model weights to keep loaded (default: half the RAM)."
        ),
    ] = None,
    context_length: Annotated[int, typer.Option("--context-length", help="Default context window.")] = 4096,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Use an external Dask scheduler (tcp://host:port).")
    ] = None,
    scheduler_port: Annotated[
        int, typer.Option("--scheduler-port", help="Port of the node's own scheduler.")
    ] = 0,
    audit_rate: Annotated[
        float, typer.Option("--audit-rate", help="Share of path-eval units re-run on another provider.")
    ] = 0.1,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-body-bytes",
            envvar="IOLLM_MAX_BODY_BYTES",
            help="Largest request body of the JSON APIs (default 8 MiB); larger ones get 413.",
        ),
    ] = None,
    max_upload_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-upload-bytes",
            envvar="IOLLM_MAX_UPLOAD_BYTES",
            help="Largest batch of chunks in one upload request (default 256 MiB).",
        ),
    ] = None,
    max_json_depth: Annotated[
        int | None,
        typer.Option(
            "--max-json-depth",
            envvar="IOLLM_MAX_JSON_DEPTH",
            help="Deepest JSON nesting accepted (default 64).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a node in the foreground: hub, APIs and editor on one port. Example: iollm up --port 8700"""
    from ..node.limits import BodyLimits
    from ..node.server import serve

    try:
        BodyLimits.from_env(body=max_body_bytes, upload=max_upload_bytes, depth=max_json_depth)
    except ValueError as exc:
        fail(str(exc), as_json, "invalid_limit")
    config = NodeConfig(
        home=(home or default_home()).expanduser(),
        host=host,
        port=port,
        seed=not no_seed,
        upstreams=list(upstream or []),
        database=database,
        anonymous_inference=anonymous_inference,
        memory_budget=memory_budget,
        context_length=context_length,
        scheduler=scheduler,
        scheduler_port=scheduler_port,
        audit_rate=audit_rate,
        max_body_bytes=max_body_bytes,
        max_upload_bytes=max_upload_bytes,
        max_json_depth=max_json_depth,
    )

    def announce(info: dict) -> None:
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
            return
        stdout.print(f"iollm node ready at [bold]{info['api']}[/bold]")
        stdout.print(f"  OpenAI API   {info['openai']}")
        stdout.print(f"  HF endpoint  HF_ENDPOINT={info['hf_endpoint']}")
        stdout.print(f"  editor       {info['editor']}")
        stdout.print(f"  admin token  {info['token_file']}")
        sys.stdout.flush()

    serve(config, announce)
