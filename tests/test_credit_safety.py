"""Credits cannot be overspent, and amounts mean one thing (security issue 13, items 7 and 8).

A real node serves a priced model to the real ``openai`` client. Admission reserves each call's most
cost (prompt tokens + ``max_tokens``, or the context, at the model's price) in the ledger before the
first token, and billing replaces the hold with the actual charge: however many calls run at once,
what is charged is exactly what the admitted calls cost, the rest are refused with 402, and nothing
stays held. Every API takes credits as a decimal string, and grants go only to users that exist.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from iollm import signing
from iollm.database import open_database
from iollm.mining.billing import Billing, Fees, call_hold
from iollm.mining.ledger import ESCROW, ISSUANCE, InsufficientFunds, Ledger, Transfer
from iollm.mining.tables import metadata
from iollm.mining.tamperlog import TamperLog
from iollm.mining.verify import verify_ledger
from iollm.money import MICRO, credits_from_json
from iollm.protocol import ProtocolError
from iollm.runtime import UsageLog, UsageRecord, usage_metadata
from nodes import Node

MODEL = "local/smol"
PRICE = 1000  # credits per million tokens, prompt and completion alike: 1,000 micro-credits a token
# About 70 prompt tokens once the chat template is applied: every call costs at least 70,000 micro.
QUESTION = (
    "Please name the seven colours of the rainbow in order, then three fruits that are red, then "
    "two animals that live in the sea, and finally say in one short sentence why the sky is blue."
)


def api(node: Node, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or node.token}"}
    return httpx.request(method, f"{node.url}{path}", headers=headers, timeout=300, **kw)


def balance(node: Node, account: str) -> int:
    reply = api(node, "GET", "/api/balance", params={"account": account})
    assert reply.status_code == 200, reply.text
    return reply.json()["balance"]


def cost(usage: dict) -> int:
    return usage["prompt_tokens"] * PRICE + usage["completion_tokens"] * PRICE


def settle(node: Node, user: str) -> list[dict]:
    """Bill until nothing is held any more; the user's charge lines."""
    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.3)  # let the usage writer land the records
        assert api(node, "POST", "/api/mining/run").status_code == 200
        if balance(node, "platform:escrow") == 0 or time.monotonic() > deadline:
            break
    reply = api(node, "GET", "/api/statement", params={"account": f"user:{user}"})
    assert reply.status_code == 200, reply.text
    return [line for line in reply.json()["lines"] if line["code"] == "charge"]


def new_user(node: Node, name: str, credits: str) -> str:
    token = node.cli_json("user", "create", name)["token"]
    node.cli_json("credits", "grant", name, credits)
    return token


@pytest.fixture(scope="module")
def priced(node_factory, smollm2_gguf: Path) -> Node:
    node = node_factory("--no-seed", "--audit-rate", "0", name="credit-safety")
    node.cli_json("push", str(smollm2_gguf), MODEL)
    node.cli_json("price", "set", MODEL, "--prompt", str(PRICE), "--completion", str(PRICE))
    return node


# --- item 7: concurrent calls never spend more than the balance ---------------------------------


def test_concurrent_calls_never_spend_more_than_the_balance(priced: Node) -> None:
    node = priced
    granted = 520_000  # 0.52 credits: enough for the old 512-token admission bar, not for 8 calls
    token = new_user(node, "carol", "0.52")
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=token, max_retries=0, timeout=600)

    def call(i: int):
        try:
            return client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"{QUESTION} ({i})"}],
                max_tokens=32,
                temperature=0,
            )
        except openai.APIStatusError as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    admitted = [r for r in results if not isinstance(r, openai.APIStatusError)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert all(r.status_code == 402 for r in refused), [(r.status_code, r.message) for r in refused]
    assert admitted and refused  # 8 calls cost at least 560,000: some must be refused
    assert all("credits" in r.message for r in refused)
    charges = settle(node, "carol")
    expected = {r.id.removeprefix("chatcmpl-"): cost(r.usage.model_dump()) for r in admitted}
    charged = {line["ref_id"]: -line["amount"] for line in charges}
    assert charged == expected  # every admitted call paid in full; refused calls paid nothing
    left = balance(node, "user:carol")
    assert left == granted - sum(expected.values()) >= 0
    assert balance(node, "platform:escrow") == 0  # no hold outlives its call


def test_a_call_without_max_tokens_holds_the_whole_context(priced: Node) -> None:
    node = priced
    token = new_user(node, "dora", "1")  # 1,000,000 micro: less than a 4096-token context at 1,000 each
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=token, max_retries=0, timeout=600)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi."}])
    assert refused.value.status_code == 402
    assert "max_tokens" in refused.value.message
    ok = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi."}], max_tokens=4
    )
    charges = settle(node, "dora")
    assert [-line["amount"] for line in charges] == [cost(ok.usage.model_dump())]
    assert balance(node, "user:dora") == MICRO - cost(ok.usage.model_dump())


def test_a_stream_holds_its_most_cost_and_a_client_that_leaves_settles_it(priced: Node) -> None:
    node = priced
    token = new_user(node, "erin", "1")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}],
        "max_tokens": 200,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("POST", f"{node.url}/v1/chat/completions", json=body, headers=headers) as reply:
        assert reply.status_code == 200
        first = next(line for line in reply.iter_lines() if line.startswith("data: "))
        usage_id = json.loads(first.removeprefix("data: "))["id"].removeprefix("chatcmpl-")
    # The client left mid-stream: the engine stops, and the hold becomes the charge for what it did.
    charges = settle(node, "erin")
    assert [line["ref_id"] for line in charges] == [usage_id]
    record = next(r for r in api(node, "GET", "/api/usage", params={"caller": "erin"}).json()["records"])
    assert record["id"] == usage_id and record["completion_tokens"] <= 200
    assert -charges[0]["amount"] == cost(record)
    lines = api(node, "GET", "/api/statement", params={"account": "user:erin"}).json()["lines"]
    held = [(line["code"], line["amount"]) for line in lines if line["ref_id"] == f"usage:{usage_id}"]
    most = cost({"prompt_tokens": record["prompt_tokens"], "completion_tokens": 200})
    assert held == [("hold", -most), ("release", most)]  # held before it ran, given back when billed
    assert balance(node, "user:erin") == MICRO - cost(record)
    assert balance(node, "platform:escrow") == 0


# --- item 8: one amount format, refused otherwise with 400; accounts must exist -------------------


@pytest.mark.parametrize("value", [2, 2.0, 0.5, True, None, [], {}, -1])
def test_the_amount_parser_refuses_anything_but_a_decimal_string(value) -> None:
    with pytest.raises(ProtocolError, match=re.escape('decimal string like "2.5"')) as refused:
        credits_from_json(value, "cap")
    assert refused.value.status == 400 and refused.value.details["param"] == "cap"


def test_the_amount_parser_reads_credits_exactly() -> None:
    assert credits_from_json("2") == 2 * MICRO
    assert credits_from_json(" 0.000001 ") == 1
    assert credits_from_json("0", allow_zero=True) == 0
    for bad in ("0", "-1", "abc", "1e3", "1.0000001", "", "NaN", "Infinity", "1_000", "\u0661"):
        with pytest.raises(ProtocolError):
            credits_from_json(bad)


def grant(node: Node, user: str, amount) -> httpx.Response:
    return api(node, "POST", "/api/credits/grant", json={"user": user, "amount": amount})


def test_grants_take_credits_as_a_decimal_string_only(priced: Node) -> None:
    node = priced
    node.cli_json("user", "create", "frank")
    before = balance(node, "user:frank")
    for number in (2, 2.0, 0, True, None, [2], {"credits": "2"}):
        reply = grant(node, "frank", number)
        assert reply.status_code == 400, (number, reply.text)
        assert 'decimal string like "2.5"' in reply.json()["error"]["message"]
    for text in ("abc", "-1", "0", "1e3", "1.0000001", "", "NaN", "1,5"):
        reply = grant(node, "frank", text)
        assert reply.status_code == 400, (text, reply.text)  # never 500
    assert balance(node, "user:frank") == before  # nothing was granted by any of them
    reply = grant(node, "frank", "2")
    assert reply.status_code == 200, reply.text
    assert reply.json()["amount"] == 2 * MICRO
    assert grant(node, "frank", "0.5").json()["balance"] == before + 2 * MICRO + MICRO // 2


def test_grants_go_only_to_users_that_exist(priced: Node) -> None:
    node = priced
    missing = grant(node, "nobody-here", "1")
    assert missing.status_code in (400, 404) and "nobody-here" in missing.json()["error"]["message"]
    for name in ("../x", "user:../x", "user:frank", "a/b", "", "x" * 300):
        reply = grant(node, name, "1")
        assert reply.status_code == 400, (name, reply.text)
    node.cli_json("org", "create", "acme")
    assert grant(node, "acme", "1").status_code in (400, 404)  # organisations have no wallet
    for account in ("user:../x", "user:nobody-here", "designer:..", "model:../../etc", "platform:nope"):
        reply = api(node, "GET", "/api/balance", params={"account": account})
        assert reply.status_code in (400, 404), (account, reply.text)
    ledger = api(node, "GET", "/api/statement", params={"account": "user:../x"})
    assert ledger.status_code == 400
    gina = node.cli_json("user", "create", "gina")["token"]
    for account in ("user:nobody-here", "user:frank"):  # whether a user exists is not told to others
        reply = api(node, "GET", "/api/balance", gina, params={"account": account})
        assert reply.status_code == 403, reply.text
    assert api(node, "GET", "/api/balance", gina).json() == {"account": "user:gina", "balance": 0}


def test_prices_take_credits_as_decimal_strings(priced: Node) -> None:
    node = priced
    for value in (PRICE, float(PRICE), -1, "abc", "-1"):
        reply = api(
            node,
            "POST",
            "/api/prices",
            json={"model": MODEL, "prompt_per_million": value, "completion_per_million": str(PRICE)},
        )
        assert reply.status_code == 400, (value, reply.text)
    reply = api(
        node,
        "POST",
        "/api/prices",
        json={"model": MODEL, "prompt_per_million": str(PRICE), "completion_per_million": f"{PRICE}.0"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["prompt_per_million"] == PRICE * MICRO  # stored as micro-credits per million


def test_agreement_caps_take_credits_as_a_decimal_string(priced: Node) -> None:
    node = priced
    key = signing.generate_key()
    key_id = signing.public_key_id(key)
    proof = signing.sign_json(key, {"user": "local", "key": key_id})
    assert api(node, "POST", "/api/keys", json={"key_id": key_id, "proof": proof}).status_code == 200

    def propose(cap) -> httpx.Response:
        terms = {
            "agreement": "ag-capcheck",
            "version": 1,
            "model": MODEL,
            "designer": {"user": "local", "key": key_id},
            "providers": [{"id": signing.public_key_id(signing.generate_key()), "share_bps": 100}],
            "until": None,
            "cap": cap,
        }
        return api(
            node, "POST", "/api/agreements", json={"terms": terms, "signature": signing.sign_json(key, terms)}
        )

    for cap in (1000, 0, "abc", "-5"):
        reply = propose(cap)
        assert reply.status_code == 400, (cap, reply.text)
    assert 'decimal string like "2.5"' in propose(1000).json()["error"]["message"]
    # A well-formed cap gets past the amount check (this provider is not registered on the node).
    assert propose("1000").status_code == 404


# --- the hold itself: atomic across threads and processes, never left behind ----------------------

HOLDER = """
import sys
from iollm import signing
from iollm.database import open_database
from iollm.mining.ledger import InsufficientFunds, Ledger
from iollm.mining.tables import metadata
from iollm.mining.tamperlog import TamperLog
db = open_database(sys.argv[1]); db.create(metadata)
ledger = Ledger(db, TamperLog(db, signing.generate_key()))
won = 0
for i in range(int(sys.argv[3])):
    try:
        ledger.hold(f"{sys.argv[2]}-{i}", "user:payer", 100)
        won += 1
    except InsufficientFunds:
        pass
print(won)
"""


def test_holds_from_threads_and_processes_never_exceed_the_balance(tmp_path: Path) -> None:
    url = str(tmp_path / "ledger.sqlite")
    db = open_database(url)
    db.create(metadata)
    log = TamperLog(db, signing.generate_key())
    ledger = Ledger(db, log)
    ledger.transfer(Transfer("seed", ISSUANCE, "user:payer", 2_000, "grant", "grant", "seed"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER, url, f"p{i}", "15"], stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]

    def hold(i: int) -> int:
        try:
            ledger.hold(f"t-{i}", "user:payer", 100)
            return 1
        except InsufficientFunds:
            return 0

    with ThreadPoolExecutor(8) as pool:
        won = sum(pool.map(hold, range(15)))
    won += sum(int(proc.communicate(timeout=300)[0]) for proc in procs)
    assert won == 20  # 45 tries at 100 against 2,000: exactly 20 holds, however they interleave
    assert ledger.balance("user:payer") == 0 and ledger.balance(ESCROW) == 2_000
    # Settling: a released hold goes back in full, in the same transaction as what follows it.
    pending = ledger.pending_holds()
    assert len(pending) == 20

    def settle(conn) -> None:
        for row in pending[:5]:
            assert ledger.release_in(conn, row["id"]) == 100
            assert ledger.release_in(conn, row["id"]) == 0  # once
        assert ledger.balance_in(conn, "user:payer") == 500

    ledger.transfer(extra=settle)
    assert ledger.balance("user:payer") == 500 and ledger.balance(ESCROW) == 1_500
    assert verify_ledger(TamperLog(db, log.key))["ok"]


def test_holds_of_calls_cut_off_by_a_stop_are_given_back(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "node.sqlite"))
    db.create(metadata)
    db.create(usage_metadata)
    ledger = Ledger(db, TamperLog(db, signing.generate_key()))
    ledger.transfer(Transfer("seed", ISSUANCE, "user:payer", 1_000, "grant", "grant", "seed"))
    finished = UsageRecord(
        caller="payer", model="m/x", repo="m/x", commit="c", backend="llama.cpp", kind="chat", stream=False
    )
    usage = UsageLog(db)
    usage.record(finished)
    usage.flush()
    usage.close()
    ledger.hold(call_hold(finished.id), "user:payer", 300)  # its record waits for billing: kept
    ledger.hold(call_hold("0" * 32), "user:payer", 400)  # the node stopped before writing its record
    ledger.hold("other", "user:payer", 100)  # not a call's hold: not the sweep's business
    billing = Billing(db, None, ledger, None, None, Fees())  # type: ignore[arg-type]
    assert billing.release_orphans() == 1
    assert sorted(h["id"] for h in ledger.pending_holds()) == sorted([call_hold(finished.id), "other"])
    assert ledger.balance("user:payer") == 1_000 - 300 - 100


def test_calls_that_cost_nothing_are_settled_together(tmp_path: Path) -> None:
    """A run of free records (no price, or a failed call) is settled in one ledger transaction per run,
    each with its "free" marker and its hold given back; a priced record between runs is billed alone."""
    from sqlalchemy import select

    from iollm.database import utc_now_iso
    from iollm.mining.tables import billed, prices

    db = open_database(str(tmp_path / "node.sqlite"))
    db.create(metadata)
    db.create(usage_metadata)
    ledger = Ledger(db, TamperLog(db, signing.generate_key()))
    ledger.transfer(Transfer("seed", ISSUANCE, "user:payer", 1_000, "grant", "grant", "seed"))
    with db.write() as conn:
        conn.execute(
            prices.insert().values(
                model="m/paid",
                prompt_per_million=MICRO,
                completion_per_million=MICRO,
                designer="alice",
                updated_at=utc_now_iso(),
            )
        )

    def record(model: str, caller: str = "payer", status: str = "ok") -> UsageRecord:
        entry = UsageRecord(
            caller=caller, model=model, repo=model, commit="c", backend="llama.cpp", kind="chat", stream=False
        )
        entry.status, entry.prompt_tokens, entry.completion_tokens = status, 5, 7
        return entry

    first = [record("m/free") for _ in range(4)] + [record("m/paid", status="error")]
    middle = record("m/paid", caller="anonymous")  # priced: billed on its own (refused: anonymous)
    last = [record("m/free") for _ in range(3)]
    ledger.hold(call_hold(first[1].id), "user:payer", 200)  # its model's price was removed mid-call
    usage = UsageLog(db)
    for entry in [*first, middle, *last]:
        usage.record(entry)
    usage.flush()
    billing = Billing(db, None, ledger, None, usage, Fees())  # type: ignore[arg-type]
    transactions = []
    transfer = ledger.transfer
    ledger.transfer = lambda *a, **k: transactions.append(1) or transfer(*a, **k)  # type: ignore[method-assign]
    assert billing.run_once() == 9
    assert len(transactions) == 3  # the first run of 5, the priced record, the last run of 3
    with db.read() as conn:
        states = {r.ref_id: r.state for r in conn.execute(select(billed).where(billed.c.ref_type == "usage"))}
    assert states == {e.id: "free" for e in [*first, *last]} | {middle.id: "refused"}
    assert ledger.balance("user:payer") == 1_000 and ledger.pending_holds() == []
    assert billing.run_once() == 0  # the cursor moved past the last record
    usage.close()
