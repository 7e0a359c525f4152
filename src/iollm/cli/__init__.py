"""The ``iollm`` command line: one verb per task, ``--json`` everywhere."""

from __future__ import annotations

import typer

from . import (
    account_cmds,
    archive_cmds,
    compute_cmds,
    env_cmds,
    eval_cmds,
    hub_cmds,
    mining_cmds,
    node_cmds,
    path_cmds,
    runtime_cmds,
    suite_cmds,
)

app = typer.Typer(
    name="iollm",
    help="The Internet of LLMs: share, run, combine and jointly mine models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for group in (node_cmds.app, hub_cmds.app, runtime_cmds.app, account_cmds.app):
    app.registered_commands.extend(group.registered_commands)
app.registered_commands.extend(archive_cmds.app.registered_commands)
app.registered_commands.extend(env_cmds.app.registered_commands)
app.add_typer(hub_cmds.store_app, name="store")
app.add_typer(account_cmds.token_app, name="token")
app.add_typer(account_cmds.user_app, name="user")
app.add_typer(account_cmds.org_app, name="org")
app.add_typer(env_cmds.env_app, name="env")
app.add_typer(compute_cmds.provider_app, name="provider")
app.add_typer(compute_cmds.job_app, name="job")
app.registered_commands.extend(compute_cmds.app.registered_commands)
app.add_typer(mining_cmds.credits_app, name="credits")
app.add_typer(mining_cmds.price_app, name="price")
app.add_typer(mining_cmds.agreement_app, name="agreement")
app.add_typer(mining_cmds.ledger_app, name="ledger")
app.registered_commands.extend(mining_cmds.app.registered_commands)
app.add_typer(path_cmds.path_app, name="path")
app.add_typer(suite_cmds.suite_app, name="suite")
app.registered_commands.extend(suite_cmds.app.registered_commands)
app.registered_commands.extend(eval_cmds.app.registered_commands)


def main() -> None:
    app()
