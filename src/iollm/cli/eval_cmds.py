"""``iollm eval``: a model's score on a public benchmark, measured through the node's OpenAI API."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import IollmError, NotFound, ProtocolError
from ..protocol import NodeClient, put_file
from .common import Ctx, EndpointOpt, JsonOpt, TokenOpt, emit, stderr, stdout
from .path_cmds import path_errors

if TYPE_CHECKING:
    from ..paths.eval_run import EvalReport

# The path layer is imported by the command itself, so that other `iollm` commands start without it.

app = typer.Typer()

ANSWER_TIMEOUT_S = 1800.0

# lm-evaluation-harness's default shots where the published setups use few-shot prompts.
DEFAULT_SHOTS = {"gsm8k": 5, "math500": 4}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "iollm" / "evals"


def _revision_and_card(client: NodeClient, model: str) -> tuple[str, str, dict[str, Any]]:
    """(commit, revision, card) of a hub model; ("", "", {}) for anything else.

    The revision, part of the cache key, hashes the files but README.md: writing a score to the card makes
    a new commit and must not make the next run score everything again.
    """
    try:
        info = client.repo_info("model", model)
    except (NotFound, ProtocolError):
        return "", "", {}
    files = sorted((f["path"], f["sha256"]) for f in info.get("files") or [] if f["path"] != "README.md")
    revision = hashlib.sha256(json.dumps(files).encode()).hexdigest() if files else ""
    return str(info.get("commit") or ""), revision, dict(info.get("card") or {})


def _pick_api(api: str, card: dict[str, Any], model: str) -> str:
    if api != "auto":
        return api
    if model.startswith("path/"):
        return "chat"
    return "completion" if card.get("chat_template") is False else "chat"


def _write_card(client: NodeClient, report: EvalReport) -> dict[str, Any]:
    """Merge the result into the model's README (model-index); a refusal is reported, not fatal."""
    from ..paths.eval_card import card_with_result

    try:
        try:
            response = client.request("GET", f"/{report.model}/resolve/{report.commit}/README.md")
            readme: str | None = response.text
        except NotFound:
            readme = None
        text = card_with_result(readme, report.model, report)
        message = f"iollm eval: {report.suite} {100 * report.score:.1f}"
        commit = put_file(client, report.model, "README.md", text.encode(), message=message)
    except IollmError as exc:
        return {"written": False, "reason": exc.message}
    return {"written": True, "commit": commit}


def _progress_callback(enabled: bool, label: str):
    if not enabled or not sys.stderr.isatty() or os.environ.get("IOLLM_NO_PROGRESS"):
        return None, None
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Argument(help="A model the node serves: namespace/name or path/NAME.")],
    task: Annotated[
        str,
        typer.Option(
            "--task", help="gsm8k, math500, mmlu or mmlu/SUBJECT, arc-challenge, ... (iollm suite list)"
        ),
    ],
    limit: Annotated[int | None, typer.Option("--limit", help="Score a fixed sample of N items.")] = None,
    shots: Annotated[
        int | None, typer.Option("--shots", help="Few-shot examples (default per task).")
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option("--protocol", help="loglikelihood (multiple choice default) or generate."),
    ] = None,
    api: Annotated[str, typer.Option("--api", help="auto, chat or completion (generate only).")] = "auto",
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Per answer.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Requests in flight.")] = 2,
    card: Annotated[bool, typer.Option("--card/--no-card", help="Write the score to the model card.")] = True,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse cached item results.")] = True,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", envvar="IOLLM_EVAL_CACHE", help="Default ~/.cache/iollm/evals."),
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a model on a benchmark the way lm-evaluation-harness does, with a 95 % interval.

    Example: iollm eval iollm/qwen2.5-coder-0.5b-instruct --task humaneval
    """
    from ..paths.catalog import load_suite
    from ..paths.eval_run import EvalConfig, ResultCache, run_eval

    ctx = Ctx(endpoint, token, None, as_json)
    with path_errors(as_json):
        if api not in ("auto", "chat", "completion"):
            raise ProtocolError(f"--api must be auto, chat or completion, not {api!r}")
        if limit is not None and limit < 1:
            raise ProtocolError("--limit must be at least 1")
        suite = load_suite(task)
        multiple_choice = all(t.meta.get("requests") for t in suite.tasks[:5])
        chosen = protocol or ("loglikelihood" if multiple_choice else "generate")
        if chosen == "loglikelihood" and not multiple_choice:
            raise ProtocolError(f"{task} is not multiple choice: use --protocol generate")
        # One answer can take minutes on a small CPU (and waits behind the other request in flight).
        with NodeClient(ctx.endpoint, ctx.token, timeout=ANSWER_TIMEOUT_S) as client:
            commit, revision, model_card = _revision_and_card(client, model)
            config = EvalConfig(
                model=model,
                suite=suite.name,
                protocol=chosen,
                api=_pick_api(api, model_card, model),
                shots=DEFAULT_SHOTS.get(suite.name, 0) if shots is None else shots,
                limit=limit,
                max_tokens=max_tokens,
                revision=revision,
                commit=commit,
                concurrency=concurrency,
            )
            folder = cache_dir or default_cache_dir()
            store = ResultCache(folder / "results.sqlite") if cache and revision else None
            bar, update = _progress_callback(not as_json, f"{suite.name} {chosen}")
            try:
                if bar is not None:
                    bar.start()
                report = run_eval(client, config, suite, store, update)
            finally:
                if bar is not None:
                    bar.stop()
                if store is not None:
                    store.close()
            result = report.to_json(with_items=True)
            result["card"] = _write_card(client, report) if card and commit else {"written": False}

    def human(d: dict[str, Any]) -> None:
        table = Table(title=f"{d['model']} on {d['suite']}")
        for column in ("protocol", "shots", "n", "accuracy", "95% CI", "acc per byte", "cached", "seconds"):
            table.add_column(column)
        norm = "" if d["score_norm"] is None else f"{100 * d['score_norm']:.1f}"
        how = d["protocol"] if d["protocol"] == "loglikelihood" else f"generate ({d['api']})"
        table.add_row(
            how, str(d["shots"]), str(d["n"]), f"{100 * d['score']:.1f}",
            f"{100 * d['ci_low']:.1f}-{100 * d['ci_high']:.1f}", norm, str(d["cached"]), str(d["seconds"]),
        )  # fmt: skip
        stdout.print(table)
        if d["card"].get("written"):
            stdout.print(f"model card updated: commit {d['card']['commit'][:12]}", highlight=False)
        elif d["card"].get("reason"):
            stderr.print(f"[yellow]model card not updated:[/yellow] {d['card']['reason']}", highlight=False)

    emit(ctx, result, human)
