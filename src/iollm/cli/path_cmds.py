"""Path commands: run a workflow graph, search for the best path on a suite, publish a path as a model.
(Suites and leaderboards are in ``suite_cmds``.)

Examples::

    iollm path run graph.json --input "What is 12 plus 30?"
    iollm path search --suite gsm8k --models iollm/qwen2.5-coder-0.5b-instruct,iollm/smollm2-135m-instruct
    iollm path publish graph.json arithmetic-vote
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import IollmError, Unavailable
from .common import Ctx, EndpointOpt, HomeOpt, JsonOpt, TokenOpt, emit, errors, fail, stderr, stdout

if TYPE_CHECKING:
    from ..paths.search import SearchConfig

# The path layer (numpy, the executor, the routers) is imported by the commands that use it, so that
# every other `iollm` command starts without it.

path_app = typer.Typer(
    help="Run workflow graphs and search for the best path on a suite.", no_args_is_help=True
)

OpenAIUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--openai-url", help="OpenAI-compatible endpoint for model calls (default: the node's /v1)."
    ),
]
MICRO = 1_000_000


@contextmanager
def path_errors(as_json: bool) -> Iterator[None]:
    """Graph, suite and search errors become one line on stderr and a non-zero exit, like node errors."""
    from ..paths.evaluation import SearchError
    from ..paths.graph import GraphError
    from ..paths.suites import SuiteError

    with errors(as_json):
        try:
            yield
        except GraphError as exc:
            where = f" (node {exc.node})" if exc.node else ""
            fail(f"invalid graph{where}: {exc}", as_json, "invalid_graph")
        except SuiteError as exc:
            fail(str(exc), as_json, "invalid_suite")
        except SearchError as exc:
            fail(str(exc), as_json, "search_failed")


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None


def _openai_url(ctx: Ctx, openai_url: str | None) -> str:
    return (openai_url or f"{ctx.endpoint}/v1").rstrip("/")


def served_models(openai_url: str, token: str | None) -> set[str]:
    """Model ids the endpoint serves (GET /models), so a graph naming another model fails before any call."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.get(f"{openai_url}/models", headers=headers, timeout=30)
    except httpx.TransportError as exc:
        raise Unavailable(
            f"cannot reach {openai_url} ({exc.__class__.__name__}): is `iollm up` running?"
        ) from exc
    if reply.status_code >= 400:
        raise IollmError(f"{openai_url}/models answered HTTP {reply.status_code}")
    return {m["id"] for m in reply.json().get("data", [])}


def _progress_enabled(as_json: bool) -> bool:
    return not as_json and sys.stderr.isatty() and not os.environ.get("IOLLM_NO_PROGRESS")


def credits_text(micro: float) -> str:
    """Micro-credits (a float: averages per task) as credits with six decimals."""
    return f"{micro / MICRO:.6f}"


# ---------------------------------------------------------------------------------------------------
# iollm path run


@path_app.command("run")
def run_cmd(
    graph_file: Annotated[Path, typer.Argument(help="A workflow JSON file (schema iollm.workflow/1).")],
    input_text: Annotated[str, typer.Option("--input", "-i", help="The task input ({{input}}).")],
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed for votes and samples.")] = 0,
    openai_url: OpenAIUrlOpt = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a graph on one input; print the answer with per-node tokens, cost and latency.

    Example: iollm path run plan-solve.json --input "What is 12 plus 30?"
    """
    from ..paths.clients import OpenAIClient
    from ..paths.executor import Executor
    from ..paths.graph import GraphError, parse_graph
    from ..paths.pricing import node_prices
    from ..paths.sandbox import Sandbox

    ctx = Ctx(endpoint, token, home, as_json)
    url = _openai_url(ctx, openai_url)
    with path_errors(as_json):
        try:
            text = graph_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise GraphError(f"{graph_file} is not UTF-8 text") from exc
        graph = parse_graph(text, known_models=served_models(url, ctx.token))
        prices = node_prices(ctx.endpoint, ctx.token, graph.models())

        async def main() -> Any:
            client = OpenAIClient(url, ctx.token)
            try:
                return await Executor(client, prices, Sandbox(timeout_s=10), seed).run(graph, input_text)
            finally:
                await client.close()

        result = asyncio.run(main())
        failed = [t for t in result.nodes.values() if t.status == "error"]
        if not result.answer and failed:
            raise IollmError(f"node {failed[0].id} failed: {failed[0].error}")
    data = {"graph": graph.name, "graph_hash": graph.canonical_hash(), **result.as_dict()}
    emit(ctx, data, _print_run)


def _print_run(data: dict[str, Any]) -> None:
    table = Table(title=f"{data['graph']} ({data['graph_hash'][:12]})")
    for column in ("node", "kind", "status", "calls", "prompt tok", "completion tok", "credits", "seconds"):
        table.add_column(column, justify="right" if column not in ("node", "kind", "status") else "left")
    for node in data["nodes"]:
        status = node["status"] + (f": {node['error']}" if node.get("error") else "")
        table.add_row(
            node["id"],
            node["kind"],
            status,
            str(node["calls"]),
            str(node["prompt_tokens"]),
            str(node["completion_tokens"]),
            credits_text(node["cost"]),
            f"{node['seconds']:.2f}",
        )
    table.add_row(
        "total",
        "",
        "",
        str(data["calls"]),
        str(data["prompt_tokens"]),
        str(data["completion_tokens"]),
        credits_text(data["cost"]),
        f"{data['latency_s']:.2f}",
        style="bold",
    )
    stdout.print(table)
    stdout.print(f"latency (critical path) {data['latency_s']:.2f} s, compute {data['compute_s']:.2f} s")
    stdout.print("[bold]answer[/bold]")
    stdout.print(data["answer"], highlight=False, markup=False)


# ---------------------------------------------------------------------------------------------------
# iollm path search


@path_app.command("search")
def search_cmd(
    suite: Annotated[str, typer.Option("--suite", help="A built-in suite name or a JSONL file.")],
    models: Annotated[str, typer.Option("--models", help="Comma-separated model ids, e.g. ns/a,ns/b.")],
    budget: Annotated[
        int | None,
        typer.Option("--budget", help="Evaluations (candidate x task); default 20% of exhaustive."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Evaluations in flight.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Split and sampling seed.")] = 0,
    heldout_fraction: Annotated[
        float, typer.Option("--heldout-fraction", help="Share of tasks held out.")
    ] = 0.5,
    max_tasks: Annotated[
        int | None, typer.Option("--max-tasks", help="Use at most this many tasks of the suite.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Cap every call's completion tokens.")
    ] = None,
    templates: Annotated[
        str | None,
        typer.Option(
            "--templates", help="Only these templates, e.g. single,cascade,pot-check (default all)."
        ),
    ] = None,
    styles: Annotated[
        str | None, typer.Option("--styles", help="Only these prompt styles: direct, step (default both).")
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report-dir", help="Default ./path-search-<suite>-<time>/.")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="Call cache file (default HOME/cache/calls.sqlite).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Reuse no calls from earlier runs.")] = False,
    no_submit: Annotated[
        bool, typer.Option("--no-submit", help="Do not submit the result to the leaderboard.")
    ] = False,
    on_cluster: Annotated[
        bool,
        typer.Option(
            "--on-cluster", help="Evaluate on the node's compute providers (path-eval jobs), not here."
        ),
    ] = False,
    openai_url: OpenAIUrlOpt = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search for the best path on a suite; report it on the held-out split and submit it to the leaderboard.

    The space is templates x model assignments x parameters; racing spends evaluations on the search split
    only, then the chosen path, the Pareto front and the baselines are measured on the held-out split.

    Example: iollm path search --suite gsm8k --models iollm/qwen2.5-coder-0.5b-instruct,iollm/smollm2-135m-instruct --budget 300
    """
    from ..paths.catalog import load_suite
    from ..paths.cluster_search import ClusterEvaluator
    from ..paths.evaluation import Evaluator, SearchError
    from ..paths.pricing import node_prices
    from ..paths.report import write_report
    from ..paths.search import SearchConfig

    ctx = Ctx(endpoint, token, home, as_json)
    url = _openai_url(ctx, openai_url)
    with path_errors(as_json):
        names = [m.strip() for m in models.split(",") if m.strip()]
        if not names:
            raise SearchError("--models needs at least one model id")
        loaded = load_suite(suite)
        known = served_models(url, ctx.token)
        missing = [m for m in names if m not in known]
        if missing:
            raise SearchError(
                f"model {missing[0]!r} is not served by {url} (served: {', '.join(sorted(known)) or 'none'})"
            )
        if workers < 1:
            raise SearchError("--workers must be at least 1")
        prices = node_prices(ctx.endpoint, ctx.token, names)
        node = ctx.client() if on_cluster else None
        with tempfile.TemporaryDirectory(prefix="iollm-calls-") as scratch:
            cache_path = (
                Path(scratch) / "calls.sqlite" if no_cache else (cache or ctx.home / "cache" / "calls.sqlite")
            )
            # --on-cluster: every racing round is a path-eval job on the node's providers
            evaluator = Evaluator if node is None else partial(ClusterEvaluator, node=node, suite=loaded.name)
            config = SearchConfig(
                names,
                loaded,
                budget,
                workers,
                seed,
                heldout_fraction,
                max_tasks,
                max_tokens,
                evaluator=evaluator,
                templates=_names(templates),
                styles=_names(styles),
            )
            try:
                result = _search(ctx, url, config, prices, cache_path, as_json, warm=node is None)
            finally:
                if node is not None:
                    node.close()
        folder = report_dir or Path(
            f"path-search-{loaded.name.replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        result["report"] = write_report(result, folder)
        result["submission"] = None if no_submit else _submit(ctx, result)
    emit(ctx, result, _print_search)


def _search(
    ctx: Ctx, url: str, config: SearchConfig, prices: Any, cache_path: Path, as_json: bool, warm: bool = True
) -> dict[str, Any]:
    """Run the search, printing its preview first; ``warm`` loads every model here before it starts."""
    from ..paths.clients import open_client, warm_up
    from ..paths.search import Search

    async def main() -> dict[str, Any]:
        client, inner = open_client(url, ctx.token, cache_path, concurrency=config.workers)
        try:
            if warm:
                await warm_up(inner, config.models)
            with _progress(as_json) as on_progress:
                search = Search(config, client, prices, on_progress)
                preview = search.preview()
                if not as_json:
                    _print_preview(preview)
                return {"preview": preview, **await search.run()}
        finally:
            await inner.close()

    return asyncio.run(main())


@contextmanager
def _progress(as_json: bool) -> Iterator[Any]:
    if not _progress_enabled(as_json):
        yield None
        return
    columns = (TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            elif done == 1:  # a new batch of this phase (each racing round is one)
                bar.reset(tasks[phase], total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


def _print_preview(preview: dict[str, Any]) -> None:
    calls = preview["projected_calls"]
    stderr.print(
        f"space: {preview['space_size']} candidates ("
        + ", ".join(f"{n} {t}" for t, n in preview["templates"].items())
        + f"); {preview['search_tasks']} search / {preview['heldout_tasks']} held-out tasks",
        highlight=False,
    )
    stderr.print(
        f"budget: {preview['budget']} of {preview['evaluations_exhaustive']} exhaustive evaluations; projected model "
        f"calls: {calls['search']} for the search (at most {calls['search_unique_at_most']} distinct), "
        f"{calls['exhaustive']} for an exhaustive run ({calls['exhaustive_unique']} distinct)",
        highlight=False,
    )


def _submit(ctx: Ctx, result: dict[str, Any]) -> dict[str, Any]:
    """Submit the chosen path's held-out scores; a failure is reported in the result, not fatal."""
    body = {
        "graph": result["best"]["graph"],
        "scores": result["heldout_scores"],
        "fingerprint": result["split"]["fingerprint"]["heldout"],
        "cost_per_task": result["heldout"]["cost_per_task"],
    }
    if result.get("jobs"):
        body["jobs"] = result["jobs"]  # the providers that evaluated it share a breakthrough reward
    digest = hashlib.sha256(json.dumps([result["suite"], body], sort_keys=True).encode()).hexdigest()
    body["idempotency_key"] = f"path-search-{digest[:32]}"
    try:
        with ctx.client() as client:
            return client.submit_result(result["suite"], body)
    except IollmError as exc:
        return {"error": exc.message}


def _heldout_row(label: str, entry: dict[str, Any] | None) -> list[str] | None:
    if not entry or not entry.get("heldout"):
        return None
    h = entry["heldout"]
    return [
        label,
        entry["name"],
        f"{h['score']:.3f}",
        f"[{h['ci_low']:.3f}, {h['ci_high']:.3f}]",
        credits_text(h["cost_per_task"]),
        f"{h['latency_s']:.2f}",
    ]


def _print_search(result: dict[str, Any]) -> None:
    table = Table(title=f"{result['suite']}: held-out split ({result['split']['heldout_size']} tasks)")
    for column in ("", "path", "score", "95% CI", "credits/task", "latency s"):
        table.add_column(column)
    rows = [_heldout_row("chosen", result["best"])]
    rows += [_heldout_row(k.replace("_", " "), v) for k, v in result["baselines"].items()]
    rows += [_heldout_row("front", e) for e in result["pareto"] if e["name"] != result["best"]["name"]]
    for row in rows:
        if row:
            table.add_row(*row)
    stdout.print(table)
    made, cached = result.get("calls_made") or 0, result.get("calls_cached") or 0
    stdout.print(
        f"evaluations: {result['evaluations_used']} of {result['evaluations_exhaustive']} exhaustive; "
        f"model calls: {made} made, {cached} from the cache",
        highlight=False,
    )
    chosen = result["vs_best_single"]["chosen"]
    stdout.print(
        f"vs best single ({result['vs_best_single']['best_single']}): {chosen['quality_delta']:+.3f} "
        f"at {chosen['cost_ratio']:.2f}x cost",
        highlight=False,
    )
    stdout.print(f"report: {result['report']['markdown']} and {result['report']['plot']}", highlight=False)
    submission = result.get("submission")
    if submission:
        if submission.get("error"):
            stdout.print(f"leaderboard: not submitted ({submission['error']})", highlight=False)
        elif submission.get("breakthrough"):
            stdout.print(
                f"leaderboard: [bold]new record[/bold] (+{submission['breakthrough']['improvement']:.3f}): "
                "a breakthrough",
                highlight=False,
            )
        else:
            stdout.print(
                f"leaderboard: submission #{submission['submission']['id']}"
                + (" holds the record" if submission["record"] else "")
                + (f" - {submission['reason']}" if submission.get("reason") else ""),
                highlight=False,
            )


# ---------------------------------------------------------------------------------------------------
# iollm path publish


@path_app.command("publish")
def path_publish_cmd(
    graph_file: Annotated[Path, typer.Argument(help="Workflow graph JSON file.")],
    name: Annotated[str, typer.Argument(help="The model is served as path/NAME.")],
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a workflow as the model ``path/NAME``: callable over /v1 like any model, versioned in the hub.

    Example: iollm path publish graph.json arithmetic-vote
    """
    from ..paths.graph import parse_graph

    ctx = Ctx(endpoint, token, home, as_json)
    with path_errors(as_json):
        try:
            text = graph_file.read_text()
        except OSError as exc:
            fail(f"cannot read {graph_file}: {exc.strerror}", as_json, "not_found")
        graph = parse_graph(text)
        with ctx.client() as client:
            result = client.create_path(name, graph.to_json())
    emit(
        ctx,
        result,
        lambda r: stdout.print(
            f"published [bold]{r.get('model', 'path/' + name)}[/bold] (commit {str(r.get('commit', ''))[:12]})",
            highlight=False,
        ),
    )
