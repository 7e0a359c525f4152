"""Accounts: whoami, tokens, users, organisations."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from .common import Ctx, EndpointOpt, HomeOpt, JsonOpt, TokenOpt, emit, errors, stderr, stdout

token_app = typer.Typer(help="Create, list and revoke access tokens.")
user_app = typer.Typer(help="Create and list users (admin).")
org_app = typer.Typer(help="Organisations: shared namespaces.")
app = typer.Typer()


@app.command("whoami")
def whoami_cmd(
    endpoint: EndpointOpt = None, token: TokenOpt = None, home: HomeOpt = None, as_json: JsonOpt = False
):
    """Who the current token belongs to. Example: iollm whoami"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        me = client.whoami()
    emit(
        ctx,
        me,
        lambda m: stdout.print(f"{m['name']} ({m['scope']} token){' admin' if m['is_admin'] else ''}"),
    )


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the token by.")],
    read_only: Annotated[bool, typer.Option("--read-only", help="A token that can only read.")] = False,
    user: Annotated[
        str | None, typer.Option("--user", help="Admin only: create it for another user.")
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a new token (shown once). Example: iollm token create laptop --read-only"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.create_token(name, "read" if read_only else "write", user)

    def human(r: dict[str, Any]) -> None:
        stdout.print(r["token"], highlight=False)  # the only thing on stdout, for $(iollm token create x)
        if "id" in r:
            stderr.print(
                f"token {r['id']} ({r['name']}); revoke it with `iollm token revoke {r['id']}`", markup=False
            )

    emit(ctx, result, human)


@token_app.command("list")
def token_list(
    endpoint: EndpointOpt = None, token: TokenOpt = None, home: HomeOpt = None, as_json: JsonOpt = False
):
    """Your tokens (names and scopes; secrets are never stored)."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.tokens()

    def human(r: dict[str, Any]) -> None:
        table = Table("id", "name", "scope", "created", "revoked")
        for t in r["tokens"]:
            revoked = (t.get("revoked_at") or "yes")[:19] if t["revoked"] else ""
            table.add_row(str(t["id"]), t["name"], t["scope"], t["created_at"][:19], revoked)
        stdout.print(table)

    emit(ctx, result, human)


@token_app.command("revoke")
def token_revoke(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="NAME|ID",
            help="The token's id or name, as `iollm token list` shows them (not its secret).",
        ),
    ],
    user: Annotated[
        str | None, typer.Option("--user", help="Admin only: revoke a token of another user.")
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token: it is refused at once everywhere, for good. Example: iollm token revoke laptop

    A number is taken as an id first; a name must match one live token (else revoke by id)."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.revoke_token(ref, user)
    emit(
        ctx,
        result,
        lambda r: stdout.print(
            f"revoked token {r['id']} ({r['name']}) of {r['user']} at {r['revoked_at']}",
            highlight=False,
            markup=False,
        ),
    )


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument()],
    admin: Annotated[bool, typer.Option("--admin")] = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user and print its first token. Example: iollm user create alice"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.create_user(name, admin)
    emit(ctx, result, lambda r: stdout.print(f"user {r['user']} token: {r['token']}"))


@user_app.command("list")
def user_list(
    endpoint: EndpointOpt = None, token: TokenOpt = None, home: HomeOpt = None, as_json: JsonOpt = False
):
    """Users and organisations of the node."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.users()
    emit(ctx, result, lambda r: [stdout.print(f"{u['kind']:5} {u['name']}") for u in r["users"]])


@org_app.command("create")
def org_create(
    name: Annotated[str, typer.Argument()],
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an organisation; you become its admin. Example: iollm org create lab"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.create_org(name)
    emit(ctx, result, lambda r: stdout.print(f"organisation {r['org']} (admin {r['admin']})"))


@org_app.command("add")
def org_add(
    org: Annotated[str, typer.Argument()],
    user: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option("--role", help="admin, write or read")] = "write",
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a member to an organisation. Example: iollm org add lab alice --role write"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.add_org_member(org, user, role)
    emit(ctx, result, lambda r: stdout.print(f"{r['user']} is now {r['role']} in {r['org']}"))
