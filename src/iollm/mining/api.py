"""HTTP face of joint mining: credits, balances, statements, prices, keys, agreements, the ledger log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from ..errors import ProtocolError
from ..hub import Identity
from ..hub.deps import caller
from ..protocol.server import read_json_body
from .tamperlog import check_proof

router = APIRouter(prefix="/api")


def mining(request: Request):
    return request.app.state.mining


@router.post("/credits/grant")
async def grant(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    data = await read_json_body(request)
    return await run_in_threadpool(
        mining(request).grant, who, data.get("user"), data.get("amount"), data.get("id")
    )


@router.get("/balance")
def balance(request: Request, account: str | None = None, who: Identity = Depends(caller)) -> dict[str, Any]:
    return mining(request).balance(who, account)


@router.get("/statement")
def statement(request: Request, account: str, who: Identity = Depends(caller)) -> dict[str, Any]:
    return mining(request).statement(who, account)


@router.post("/prices")
async def set_price(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    data = await read_json_body(request)
    return await run_in_threadpool(
        mining(request).billing.set_price,
        who,
        str(data.get("model", "")),
        data.get("prompt_per_million"),
        data.get("completion_per_million"),
    )


@router.get("/prices")
def list_prices(request: Request) -> dict[str, Any]:
    return {"prices": mining(request).billing.list_prices()}


@router.post("/keys")
async def register_key(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    data = await read_json_body(request)
    return await run_in_threadpool(
        mining(request).agreements.register_key, who, str(data.get("key_id", "")), str(data.get("proof", ""))
    )


@router.post("/agreements")
async def propose(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    data = await read_json_body(request)
    if not isinstance(data.get("terms"), dict):
        raise ProtocolError("send {terms, signature}")
    return await run_in_threadpool(
        mining(request).agreements.propose, who, data["terms"], str(data.get("signature", ""))
    )


@router.get("/agreements")
def list_agreements(request: Request, model: str | None = None, party: str | None = None) -> dict[str, Any]:
    return {"agreements": mining(request).agreements.list(model, party)}


@router.get("/agreements/{agreement_id}")
def get_agreement(agreement_id: str, request: Request, version: int | None = None) -> dict[str, Any]:
    return mining(request).agreements.get(agreement_id, version)


@router.post("/agreements/{agreement_id}/signatures")
async def sign(agreement_id: str, request: Request) -> dict[str, Any]:
    data = await read_json_body(request)
    version = data.get("version")
    return await run_in_threadpool(
        mining(request).agreements.sign,
        agreement_id,
        int(version) if version is not None else None,
        str(data.get("provider", "")),
        str(data.get("signature", "")),
    )


@router.post("/ledger/verify")
def verify(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    return mining(request).verify(who)


@router.get("/ledger/proof/{entry}")
def prove(entry: str, request: Request) -> dict[str, Any]:
    return mining(request).prove(entry)


@router.post("/ledger/check")
async def check(request: Request) -> dict[str, Any]:
    ok, reason = check_proof(await read_json_body(request))
    return {"ok": ok, "reason": reason}


@router.get("/ledger/checkpoint")
def checkpoint(request: Request) -> dict[str, Any]:
    return mining(request).log.latest_checkpoint()


@router.post("/mining/run")
def run_now(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    """Bill, reward and log now instead of waiting for the next pass (admin)."""
    who.require_admin()
    return mining(request).run_once()
