"""Runtime commands: run a model (one answer, or an interactive chat), list usage."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from ..errors import ProtocolError, Unavailable, error_from_json
from .common import Ctx, EndpointOpt, HomeOpt, JsonOpt, TokenOpt, emit, errors, stdout

app = typer.Typer()


def _stream_chat(ctx: Ctx, body: dict[str, Any], echo: bool) -> tuple[str, dict[str, Any]]:
    """Stream one chat completion; prints pieces as they arrive when ``echo``. Returns (text, usage)."""
    headers = {"Authorization": f"Bearer {ctx.token}"} if ctx.token else {}
    text, usage = [], {}
    try:
        with httpx.stream(
            "POST",
            f"{ctx.endpoint}/v1/chat/completions",
            json=body,
            headers=headers,
            timeout=httpx.Timeout(600, connect=10),
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from_json(response.status_code, response.json())
            for line in response.iter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                event = json.loads(line[5:])
                if "error" in event:
                    raise error_from_json(500, event)
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    text.append(piece)
                    if echo and piece:
                        sys.stdout.write(piece)
                        sys.stdout.flush()
    except httpx.TransportError as exc:
        raise Unavailable(f"cannot reach the node at {ctx.endpoint}: is `iollm up` running?") from exc
    return "".join(text), usage


@app.command("run")
def run_cmd(
    model: Annotated[str, typer.Argument(help="A model or environment, e.g. iollm/smollm2-135m-instruct")],
    prompt: Annotated[str | None, typer.Argument(help="One prompt; without it, an interactive chat.")] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Talk to a model. Example: iollm run iollm/qwen2.5-coder-0.5b-instruct "Write a haiku about diffs" """
    ctx = Ctx(endpoint, token, home, as_json)
    options = {
        k: v
        for k, v in {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}.items()
        if v is not None
    }
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    base = {"model": model, "stream": True, "stream_options": {"include_usage": True}, **options}
    with errors(as_json):
        if prompt is not None:
            history.append({"role": "user", "content": prompt})
            text, usage = _stream_chat(ctx, {**base, "messages": history}, echo=not as_json)
            if as_json:
                emit(ctx, {"model": model, "answer": text, "usage": usage})
            else:
                sys.stdout.write("\n")
            return
        if as_json:
            raise ProtocolError("--json needs a PROMPT (the interactive chat prints for people)")
        stdout.print(f"chatting with [bold]{model}[/bold]; /bye or Ctrl-D to leave", highlight=False)
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                break
            if line.strip() in ("/bye", "/exit", "/quit"):
                break
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
            text, _ = _stream_chat(ctx, {**base, "messages": history}, echo=True)
            sys.stdout.write("\n")
            history.append({"role": "assistant", "content": text})


@app.command("usage")
def usage_cmd(
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time, e.g. 2026-11-25T00:00:00Z")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Admin only: another user's usage.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Inference calls with exact token counts, and their totals. Example: iollm usage --model iollm/gemma-3-270m"""
    ctx = Ctx(endpoint, token, home, as_json)
    params = {k: v for k, v in {"model": model, "since": since, "user": user, "limit": limit}.items() if v}
    with errors(as_json), ctx.client() as client:
        result = client.usage(params)

    def human(r: dict[str, Any]) -> None:
        table = Table("time", "caller", "model", "kind", "prompt", "completion", "ms", "status")
        for row in r["records"]:
            table.add_row(
                row["created_at"][:19],
                row["caller"],
                row["model"],
                row["kind"],
                str(row["prompt_tokens"]),
                str(row["completion_tokens"]),
                f"{row['latency_ms']:.0f}",
                row["status"],
            )
        stdout.print(table)
        t = r["totals"]
        stdout.print(
            f"{t['calls']} calls, {t['prompt_tokens']} prompt + {t['completion_tokens']} completion tokens"
        )

    emit(ctx, result, human)
