"""Joint-mining commands: credits, balances, statements, prices, agreements, the ledger log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import ProtocolError
from ..money import format_credits, parse_credits
from .common import Ctx, EndpointOpt, HomeOpt, JsonOpt, TokenOpt, emit, errors, stdout

credits_app = typer.Typer(help="Credits (admin).")
price_app = typer.Typer(help="Prices of your models.")
agreement_app = typer.Typer(help="Revenue-share agreements between a model's designer and providers.")
ledger_app = typer.Typer(help="The tamper-evident ledger log.")
app = typer.Typer()


def _lines(lines: list[dict[str, Any]]) -> None:
    table = Table("#", "time", "amount", "balance", "counterparty", "code", "caused by")
    for line in lines:
        table.add_row(
            str(line["seq"]),
            line["at"][:19],
            format_credits(line["amount"]),
            format_credits(line["balance"]),
            line["counterparty"],
            line["code"],
            f"{line['ref_type']} {line['ref_id']}",
        )
    stdout.print(table)


@credits_app.command("grant")
def grant(
    user: Annotated[str, typer.Argument()],
    amount: Annotated[str, typer.Argument(help="Credits, e.g. 10 or 2.5 (6 decimals at most).")],
    transfer_id: Annotated[
        str | None, typer.Option("--id", help="Transfer id (repeating it is a no-op).")
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give a user credits (admin). Example: iollm credits grant alice 25"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        credits = format_credits(parse_credits(amount))  # the API takes a decimal string of credits
        result = client.grant_credits(user, credits, transfer_id)
    emit(
        ctx,
        result,
        lambda r: stdout.print(
            f"{r['account']}: +{format_credits(r['amount'])}, balance {format_credits(r['balance'])}"
        ),
    )


@app.command("balance")
def balance(
    account: Annotated[
        str | None, typer.Argument(help="user:NAME, designer:NAME, provider:ID, model:NS/NAME")
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """An account's balance (default: your own wallet). Example: iollm balance designer:alice"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.balance(account)
    emit(ctx, result, lambda r: stdout.print(f"{r['account']}: {format_credits(r['balance'])} credits"))


@app.command("statement")
def statement(
    account: Annotated[str, typer.Argument()],
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every line of an account, each traced to the usage, meter or breakthrough record behind it."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.statement(account)
    emit(ctx, result, lambda r: _lines(r["lines"]))


@price_app.command("set")
def price_set(
    model: Annotated[str, typer.Argument()],
    prompt: Annotated[str, typer.Option("--prompt", help="Credits per million prompt tokens.")],
    completion: Annotated[str, typer.Option("--completion", help="Credits per million completion tokens.")],
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Price your model. Example: iollm price set alice/terse --prompt 0.5 --completion 1.5"""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.set_price(
            model, format_credits(parse_credits(prompt)), format_credits(parse_credits(completion))
        )
    emit(
        ctx,
        result,
        lambda r: stdout.print(
            f"{r['model']}: {format_credits(r['prompt_per_million'])} / "
            f"{format_credits(r['completion_per_million'])} credits per M tokens"
        ),
    )


def _designer_key(ctx: Ctx, client) -> Any:
    """This user's signing key (HOME/designer.key), registered with the node on first use."""
    from .. import signing

    path = ctx.home / "designer.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        signing.save_private_key(signing.generate_key(), path)
    key = signing.load_private_key(path)
    key_id = signing.public_key_id(key)
    user = client.whoami()["name"]
    client.register_key(key_id, signing.sign_json(key, {"user": user, "key": key_id}))
    return key, key_id, user


@agreement_app.command("propose")
def propose(
    model: Annotated[str, typer.Option("--model", help="Your model (namespace/name).")],
    provider: Annotated[list[str], typer.Option("--provider", help="Provider id (repeat for several).")],
    share_bps: Annotated[
        list[int], typer.Option("--share-bps", help="Each provider's share in basis points.")
    ],
    compute_pledge: Annotated[
        int | None, typer.Option("--compute-pledge", help="Seconds of compute pledged.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Last day the share is paid (ISO date).")
    ] = None,
    cap: Annotated[str | None, typer.Option("--cap", help="Credits after which the share stops.")] = None,
    agreement: Annotated[
        str | None, typer.Option("--agreement", help="Change this agreement (a new version).")
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Propose (signed by you) that providers get a share of your model's revenue.

    Example: iollm agreement propose --model alice/terse --provider ed25519:… --share-bps 2000 --cap 500
    """
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        if until and cap:
            raise ProtocolError("give --until or --cap, not both")
        if len(provider) != len(share_bps):
            raise ProtocolError("give one --share-bps per --provider")
        from .. import signing

        key, key_id, user = _designer_key(ctx, client)
        version = client.agreement(agreement)["version"] + 1 if agreement else 1
        terms = {
            "agreement": agreement or f"ag-{int(time.time()):x}{os.urandom(4).hex()}",
            "version": version,
            "model": model,
            "designer": {"user": user, "key": key_id},
            "providers": [
                {
                    "id": p,
                    "share_bps": s,
                    **({"compute_pledge_seconds": compute_pledge} if compute_pledge is not None else {}),
                }
                for p, s in zip(provider, share_bps, strict=True)
            ],
            "until": until,
            "cap": format_credits(parse_credits(cap)) if cap else None,  # credits as a decimal string
        }
        result = client.propose_agreement(terms, signing.sign_json(key, terms))
    emit(
        ctx,
        result,
        lambda r: stdout.print(
            f"agreement {r['id']} v{r['version']} {r['state']}: waiting for "
            f"{len(r['terms']['providers'])} provider signature(s)"
        ),
    )


@agreement_app.command("sign")
def sign_cmd(
    agreement_id: Annotated[str, typer.Argument()],
    version: Annotated[int | None, typer.Option("--version")] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign an agreement with this machine's provider key. Example: iollm agreement sign ag-1a2b"""
    from .. import signing
    from ..compute import load_identity

    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        identity = load_identity(ctx.home)
        current = client.agreement(agreement_id, version)
        result = client.sign_agreement(
            agreement_id, identity.id, current["version"], signing.sign_json(identity.key, current["terms"])
        )
    emit(ctx, result, lambda r: stdout.print(f"agreement {r['id']} v{r['version']} {r['state']}"))


@app.command("agreements")
def agreements_cmd(
    model: Annotated[str | None, typer.Option("--model")] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Agreements and their state (proposed, in_force, superseded)."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        result = client.agreements(model)

    def human(r: dict[str, Any]) -> None:
        from ..mining.agreements import agreement_cap

        table = Table("agreement", "v", "model", "state", "providers (bps)", "until / cap")
        for a in r["agreements"]:
            parties = ", ".join(f"{p['id'][:16]}… {p['share_bps']}" for p in a["terms"]["providers"])
            cap = agreement_cap(a["terms"])
            limit = a["terms"].get("until") or (format_credits(cap) if cap else "")
            table.add_row(a["id"], str(a["version"]), a["model"], a["state"], parties, limit)
        stdout.print(table)

    emit(ctx, result, human)


@ledger_app.command("verify")
def ledger_verify(
    endpoint: EndpointOpt = None, token: TokenOpt = None, home: HomeOpt = None, as_json: JsonOpt = False
) -> None:
    """Recompute every balance and the Merkle root from the log; exit 1 if anything was tampered with."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        report = client.verify_ledger()

    def human(r: dict[str, Any]) -> None:
        state = "[green]ok[/green]" if r["ok"] else "[red]TAMPERED[/red]"
        stdout.print(
            f"ledger {state}: {r['entries']} log entries, {r['transfers']} transfers, "
            f"{r['checkpoints']} signed checkpoints, root {r['root'][:16]}… ({r['seconds']} s)"
        )
        for problem in r["problems"]:
            stdout.print(f"  {problem}")

    emit(ctx, report, human)
    if not report["ok"]:
        raise typer.Exit(1)


@ledger_app.command("prove")
def ledger_prove(
    entry: Annotated[str, typer.Argument(help="A log index or a transfer id.")],
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """An inclusion proof anyone can check with the node's public key (`iollm ledger check`)."""
    ctx = Ctx(endpoint, token, home, as_json)
    with errors(as_json), ctx.client() as client:
        proof = client.ledger_proof(entry)
    emit(ctx, proof)  # pretty JSON


@ledger_app.command("check")
def ledger_check(
    proof_file: Annotated[Path, typer.Argument(help="A proof saved from `iollm ledger prove --json`.")],
    node_key: Annotated[str | None, typer.Option("--node-key", help="The node public key you trust.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check an inclusion proof offline: no node needed, only the node's public key."""
    from ..mining.tamperlog import check_proof

    ctx = Ctx(None, None, None, as_json)
    with errors(as_json):
        proof = json.loads(proof_file.read_text())
        if node_key and proof.get("node_key") != node_key:
            raise ProtocolError("the proof is signed by another key than the one you trust")
        ok, reason = check_proof(proof)
    emit(ctx, {"ok": ok, "reason": reason}, lambda r: stdout.print(r["reason"]))
    if not ok:
        raise typer.Exit(1)
