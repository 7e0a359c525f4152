"""Joint mining through a real node: credits, prices, signed agreements, billing each usage record
exactly once with investors paid by metered compute, breakthrough rewards, and the verifiable log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from iollm import signing
from iollm.money import MICRO
from nodes import Node, Provider

GRAPH = {
    "name": "single",
    "nodes": [
        {
            "id": "solve",
            "kind": "model",
            "model": "local/smol",
            "prompt": "{{input}}",
            "params": {"max_tokens": 8},
        },
        {"id": "out", "kind": "output"},
    ],
    "edges": [{"from": "solve", "to": "out"}],
}


def api(node: Node, method: str, path: str, token: str | None = None, **kw):
    return httpx.request(
        method,
        f"{node.url}{path}",
        headers={"Authorization": f"Bearer {token or node.token}"},
        timeout=120,
        **kw,
    )


def chat(node: Node, token: str, content: str = "Say hi.") -> httpx.Response:
    return api(
        node,
        "POST",
        "/v1/chat/completions",
        token,
        json={"model": "local/smol", "messages": [{"role": "user", "content": content}], "max_tokens": 8},
    )


def settle(node: Node) -> dict:
    time.sleep(0.3)  # let the usage writer land the records
    reply = api(node, "POST", "/api/mining/run")
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def market(node_factory, smollm2_gguf: Path, tmp_path_factory):
    os.environ["IOLLM_CHALLENGE_SECONDS"] = "0"  # no challenge window: rewards are paid on the next pass
    try:
        node = node_factory("--no-seed", "--audit-rate", "0", name="market")
    finally:
        del os.environ["IOLLM_CHALLENGE_SECONDS"]
    node.cli_json("push", str(smollm2_gguf), "local/smol")
    node.cli_json("price", "set", "local/smol", "--prompt", "100", "--completion", "300")
    bob = node.cli_json("user", "create", "bob")["token"]
    provider = Provider(node, tmp_path_factory.mktemp("prov") / "investor", "investor").start()
    yield node, bob, provider
    provider.kill()


def test_credits_are_granted_by_admins_and_checked_before_inference(market) -> None:
    node, bob, _ = market
    refused = chat(node, bob)
    assert refused.status_code == 402 and "credits grant" in refused.json()["error"]["message"]
    assert api(node, "GET", "/api/usage", bob).json()["totals"]["calls"] == 0  # refused before inference
    denied = node.cli("credits", "grant", "bob", "5", "--json", check=False, token=bob)
    assert denied.returncode != 0 and "admin" in json.loads(denied.stdout)["error"]["message"]
    first = node.cli_json("credits", "grant", "bob", "5", "--id", "welcome-bob")
    again = node.cli_json("credits", "grant", "bob", "5", "--id", "welcome-bob")  # same id: a no-op
    assert first["balance"] == again["balance"] == 5 * MICRO
    changed = node.cli("credits", "grant", "bob", "6", "--id", "welcome-bob", "--json", check=False)
    assert changed.returncode != 0 and "different" in json.loads(changed.stdout)["error"]["message"]
    for bad in ("-1", "1.0000001", "abc"):
        assert node.cli("credits", "grant", "bob", bad, "--json", check=False).returncode != 0


def test_agreements_need_every_signature_and_refuse_bad_terms(market, tmp_path: Path) -> None:
    node, _, provider = market
    too_much = node.cli(
        "agreement",
        "propose",
        "--model",
        "local/smol",
        "--provider",
        provider.id,
        "--share-bps",
        "9500",
        "--json",
        check=False,
    )
    assert too_much.returncode != 0 and "exceed 100%" in json.loads(too_much.stdout)["error"]["message"]
    unknown = node.cli(
        "agreement",
        "propose",
        "--model",
        "local/smol",
        "--provider",
        signing.public_key_id(signing.generate_key()),
        "--share-bps",
        "100",
        "--json",
        check=False,
    )
    assert unknown.returncode != 0
    proposed = node.cli_json(
        "agreement",
        "propose",
        "--model",
        "local/smol",
        "--provider",
        provider.id,
        "--share-bps",
        "2000",
        "--cap",
        "1000",
    )
    assert proposed["state"] == "proposed" and proposed["version"] == 1
    forged = api(
        node,
        "POST",
        f"/api/agreements/{proposed['id']}/signatures",
        json={
            "provider": provider.id,
            "signature": signing.sign_json(signing.generate_key(), proposed["terms"]),
        },
    )
    assert forged.status_code == 400
    signed = node.cli_json("agreement", "sign", proposed["id"], IOLLM_HOME=str(provider.home))
    assert signed["state"] == "in_force"
    bob = node.cli_json("user", "create", "mallory")["token"]
    stranger = node.cli(
        "agreement",
        "propose",
        "--model",
        "local/smol",
        "--provider",
        provider.id,
        "--share-bps",
        "100",
        "--json",
        check=False,
        token=bob,
        IOLLM_HOME=str(tmp_path / "mallory"),
    )
    assert stranger.returncode != 0  # only the model's designer proposes
    listed = node.cli_json("agreements", "--model", "local/smol")["agreements"]
    assert [a["state"] for a in listed] == ["in_force"]


def test_usage_is_billed_once_and_split_exactly(market) -> None:
    node, bob, provider = market
    job = api(
        node,
        "POST",
        "/api/jobs",
        json={
            "kind": "path-eval",
            "spec": {
                "graph": GRAPH,
                "tasks": [{"id": "a", "input": "1+1?", "target": "2", "checker": "numeric"}],
            },
        },
    ).json()
    deadline = time.monotonic() + 300
    while api(node, "GET", f"/api/jobs/{job['id']}").json()["state"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.5)  # the investor has now computed for local/smol
    replies = [chat(node, bob, f"Count to {i}.").json() for i in range(3)]
    settle(node)
    assert settle(node)["billed"] == 0  # nothing is billed twice
    for reply in replies:
        usage_id = reply["id"].removeprefix("chatcmpl-")
        expected = reply["usage"]["prompt_tokens"] * 100 + reply["usage"]["completion_tokens"] * 300
        parts = {}
        for account in ("user:bob", "designer:local", f"provider:{provider.id}", "model:local/smol"):
            for line in node.cli_json("statement", account)["lines"]:
                if line["ref_id"] == usage_id:
                    parts.setdefault(account, []).append(line["amount"])
        assert sum(parts["user:bob"]) == -expected
        investor = sum(parts[f"provider:{provider.id}"])
        designer = sum(parts["designer:local"])
        assert investor > 0 and designer > investor
        assert sum(parts["model:local/smol"]) == 0  # the model account passes everything on
        assert investor == pytest.approx(expected * 0.2, abs=1) and designer == pytest.approx(
            expected * 0.7, abs=1
        )
    shown = node.cli_json("balance", f"provider:{provider.id}")
    assert shown["balance"] > 0


def test_a_changed_agreement_needs_signing_again(market) -> None:
    node, _, provider = market
    current = node.cli_json("agreements", "--model", "local/smol")["agreements"][-1]
    changed = node.cli_json(
        "agreement",
        "propose",
        "--model",
        "local/smol",
        "--provider",
        provider.id,
        "--share-bps",
        "1500",
        "--agreement",
        current["id"],
    )
    assert changed["version"] == 2 and changed["state"] == "proposed"
    states = [a["state"] for a in node.cli_json("agreements", "--model", "local/smol")["agreements"]]
    assert states == ["in_force", "proposed"]  # v1 stays in force until v2 is signed by everyone
    node.cli_json("agreement", "sign", current["id"], IOLLM_HOME=str(provider.home))
    states = [a["state"] for a in node.cli_json("agreements", "--model", "local/smol")["agreements"]]
    assert states == ["superseded", "in_force"]


def test_breakthroughs_are_paid_from_the_reward_pool_once(market) -> None:
    node, bob, provider = market
    chat(node, bob)
    settle(node)  # the fee feeds the reward pool
    pool_before = node.cli_json("balance", "platform:rewards")["balance"]
    assert pool_before > 0

    def submit(graph: dict, scores: list[float], token: str, jobs: list[str]) -> dict:
        body = {"graph": graph, "scores": scores, "fingerprint": "f" * 64, "cost_per_task": 10, "jobs": jobs}
        reply = api(node, "POST", "/api/leaderboard/demo-suite/submissions", token, json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def evaluate(token: str) -> str:
        """A path-eval job run by the investor: metered compute that a submission can name."""
        task = {"id": "a", "input": "2+2?", "target": "4", "checker": "numeric"}
        body = {"kind": "path-eval", "spec": {"graph": GRAPH, "tasks": [task], "seed": len(token)}}
        job = api(node, "POST", "/api/jobs", token, json=body).json()
        deadline = time.monotonic() + 300
        while api(node, "GET", f"/api/jobs/{job['id']}", token).json()["state"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        return job["id"]

    def rewarded(account: str) -> list[dict]:
        return [
            line
            for line in node.cli_json("statement", account)["lines"]
            if line["ref_type"] == "breakthrough"
        ]

    admins_job, bobs_job = evaluate(node.token), evaluate(bob)
    submit(GRAPH, [0.0] * 30 + [1.0] * 10, node.token, [admins_job])
    # Naming somebody else's jobs directs nothing to their providers: the designer is paid alone.
    better = {**GRAPH, "nodes": [{**GRAPH["nodes"][0], "params": {"max_tokens": 16}}, GRAPH["nodes"][1]]}
    assert submit(better, [0.0] * 20 + [1.0] * 20, bob, [admins_job]).get("breakthrough")
    settle(node)
    assert len(rewarded("designer:bob")) == 1 and rewarded(f"provider:{provider.id}") == []
    chat(node, bob)
    settle(node)  # the first reward emptied the pool; fees refill it
    # Naming the designer's own evaluation jobs shares the reward with the providers that ran them.
    best = {**GRAPH, "nodes": [{**GRAPH["nodes"][0], "params": {"max_tokens": 24}}, GRAPH["nodes"][1]]}
    assert submit(best, [1.0] * 40, bob, [bobs_job]).get("breakthrough")
    settle(node)
    paid = rewarded("designer:bob")
    assert len(paid) == 2 and all(line["amount"] > 0 for line in paid)
    investor = rewarded(f"provider:{provider.id}")
    assert len(investor) == 1 and abs(investor[0]["amount"] - paid[1]["amount"]) <= 1  # 50/50 by default
    pool_after = node.cli_json("balance", "platform:rewards")["balance"]
    assert pool_after < pool_before
    settle(node)
    assert rewarded("designer:bob") == paid  # paid once


def test_the_log_verifies_and_proves_entries(market, tmp_path: Path) -> None:
    node, _, _ = market
    report = node.cli_json("ledger", "verify")
    assert report["ok"] and report["transfers"] > 0 and report["entries"] > report["transfers"]  # meters too
    proof = node.cli_json("ledger", "prove", "welcome-bob")
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    checked = node.cli_json("ledger", "check", str(tmp_path / "proof.json"), "--node-key", proof["node_key"])
    assert checked["ok"]
    wrong_key = node.cli(
        "ledger",
        "check",
        str(tmp_path / "proof.json"),
        "--node-key",
        signing.public_key_id(signing.generate_key()),
        "--json",
        check=False,
    )
    assert wrong_key.returncode != 0
