"""Suite commands: browse the task suites (built-in public benchmarks or any JSONL file) and their
leaderboards.

Examples::

    iollm suite list
    iollm suite show arc-challenge --split heldout --limit 3
    iollm leaderboard gsm8k
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from .common import Ctx, EndpointOpt, HomeOpt, JsonOpt, TokenOpt, emit, stdout
from .path_cmds import credits_text, path_errors

app = typer.Typer()  # top-level commands: leaderboard
suite_app = typer.Typer(
    help="Task suites: built-in public benchmarks (GSM8K, MATH, MMLU, ARC, HumanEval, MBPP, ...) or any JSONL file.",
    no_args_is_help=True,
)


# ---------------------------------------------------------------------------------------------------
# iollm suite list / show


@suite_app.command("list")
def suite_list_cmd(as_json: JsonOpt = False) -> None:
    """Built-in suites with their size (once fetched) and checker. Any JSONL file is a suite too.

    Example: iollm suite list
    """
    from ..paths.catalog import list_suites

    ctx = Ctx(None, None, None, as_json)
    suites = list_suites()

    def human(rows: list[dict[str, Any]]) -> None:
        table = Table(title="built-in suites (any JSONL file works too)")
        for column in ("name", "tasks", "checker", "description"):
            table.add_column(column)
        for s in rows:
            table.add_row(
                s["name"], "-" if s["size"] is None else str(s["size"]), s["checker"], s["description"]
            )
        stdout.print(table)

    emit(ctx, {"suites": suites}, lambda d: human(d["suites"]))


@suite_app.command("show")
def suite_show_cmd(
    name: Annotated[str, typer.Argument(help="A built-in suite name or a JSONL file.")],
    split: Annotated[
        str | None, typer.Option("--split", help="search or heldout (default: all tasks).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Tasks to list.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Split seed.")] = 0,
    heldout_fraction: Annotated[float, typer.Option("--heldout-fraction")] = 0.5,
    as_json: JsonOpt = False,
) -> None:
    """A suite's size, checker, split and first tasks.

    Example: iollm suite show arc-challenge --split heldout --limit 3
    """
    from ..paths.catalog import load_suite
    from ..paths.suites import SuiteError

    ctx = Ctx(None, None, None, as_json)
    with path_errors(as_json):
        if split not in (None, "search", "heldout"):
            raise SuiteError(f"--split must be search or heldout, not {split!r}")
        suite = load_suite(name)
        parts = suite.split(seed, heldout_fraction)
        tasks = suite.tasks if split is None else getattr(parts, split)
        data = {
            **suite.info(),
            "split": {
                "seed": seed,
                "heldout_fraction": heldout_fraction,
                "search_size": len(parts.search),
                "heldout_size": len(parts.heldout),
                "fingerprint": parts.fingerprint,
            },
            "shown": split or "all",
            "tasks": [t.to_json() for t in tasks[: max(0, limit)]],
        }

    def human(d: dict[str, Any]) -> None:
        stdout.print(
            f"[bold]{d['name']}[/bold]: {d['description']} ({d['size']} tasks, checker {d['checker']})"
        )
        stdout.print(
            f"split (seed {seed}): {d['split']['search_size']} search, {d['split']['heldout_size']} held-out; "
            f"source {d['source']}",
            highlight=False,
        )
        table = Table(title=f"{d['shown']} tasks (first {len(d['tasks'])})")
        for column in ("id", "input", "target"):
            table.add_column(column, overflow="fold")
        for t in d["tasks"]:
            target = t["target"] if isinstance(t["target"], str) else " | ".join(t["target"])
            table.add_row(t["id"], t["input"][:200], target[:80])
        stdout.print(table)

    emit(ctx, data, human)


# ---------------------------------------------------------------------------------------------------
# iollm leaderboard


@app.command("leaderboard")
def leaderboard_cmd(
    suite: Annotated[str, typer.Argument(help="A suite name, e.g. gsm8k.")],
    fingerprint: Annotated[
        str | None, typer.Option("--fingerprint", help="Held-out split (default: latest).")
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The record holder and ranked submissions of a suite, stored on the node.

    Example: iollm leaderboard gsm8k
    """
    ctx = Ctx(endpoint, token, home, as_json)
    with path_errors(as_json), ctx.client() as client:
        board = client.leaderboard(suite, fingerprint)
    emit(ctx, board, _print_board)


def _print_board(board: dict[str, Any]) -> None:
    if not board["submissions"]:
        stdout.print(f"no submissions for {board['suite']} yet", highlight=False)
        return
    holder = board["holder"]
    table = Table(
        title=f"{board['suite']} (held-out split {board['fingerprint'][:12]}, margin {board.get('margin')})"
    )
    for column in ("rank", "#", "designer", "score", "95% CI", "credits/task", "path", "hash", "record"):
        table.add_column(column)
    for s in board["submissions"]:
        mark = "holder" if holder and s["id"] == holder["id"] else ("record" if s["record"] else "")
        table.add_row(
            str(s["rank"]),
            str(s["id"]),
            s["designer"],
            f"{s['score']:.3f}",
            f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]",
            credits_text(s["cost_per_task"]),
            s["graph"].get("name", ""),
            s["graph_hash"][:12],
            mark,
        )
    stdout.print(table)
    stdout.print(f"breakthroughs: {len(board.get('breakthroughs') or [])}", highlight=False)
