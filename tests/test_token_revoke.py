"""Revoking a token (`iollm token revoke`, `DELETE /api/tokens/{id-or-name}`) through a real node, the
real CLI and httpx: a revoked token is refused with 401 at once on every API (native hub, OpenAI,
Hugging Face, Ollama), it stays revoked, and nobody but its owner (or an admin) can revoke it or learn
that it exists."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from nodes import Node

# One route of each API a token opens: native hub, OpenAI, Hugging Face, Ollama.
GET_ROUTES = ("/api/whoami", "/v1/models", "/api/whoami-v2", "/api/tags")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cli_error(node: Node, *args: str, token: str) -> dict:
    """Run a CLI command that must fail; its --json error document."""
    result = node.cli(*args, "--json", token=token, check=False)
    assert result.returncode != 0, result.stdout
    return json.loads(result.stdout)["error"]


@pytest.fixture(scope="module")
def users(node: Node) -> dict[str, str]:
    """Two users with their first ("default") tokens."""
    return {name: node.cli_json("user", "create", name)["token"] for name in ("alice", "bob")}


def test_revoked_token_is_refused_everywhere_at_once(node: Node, users: dict[str, str]) -> None:
    alice = users["alice"]
    created = node.cli_json("token", "create", "laptop", token=alice)
    laptop = created["token"]
    assert isinstance(created["id"], int) and created["name"] == "laptop"
    for path in GET_ROUTES:  # works, and is now in the node's identity cache
        assert httpx.get(node.url + path, headers=bearer(laptop)).status_code == 200, path
    assert openai.OpenAI(base_url=f"{node.url}/v1", api_key=laptop).models.list().data is not None

    revoked = node.cli_json("token", "revoke", "laptop", token=alice)
    assert revoked["id"] == created["id"] and revoked["name"] == "laptop" and revoked["user"] == "alice"
    assert revoked["revoked"] is True and revoked["revoked_at"]

    for path in GET_ROUTES:
        reply = httpx.get(node.url + path, headers=bearer(laptop))
        assert reply.status_code == 401, (path, reply.text)
    chat = httpx.post(
        f"{node.url}/v1/chat/completions",
        headers=bearer(laptop),
        json={"model": "local/anything", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 401 and chat.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{node.url}/v1", api_key=laptop).models.list()
    assert cli_error(node, "whoami", token=laptop)["code"] == "unauthorized"

    # the owner's other tokens are untouched, and the list says when it was revoked
    assert httpx.get(f"{node.url}/api/whoami", headers=bearer(alice)).json()["name"] == "alice"
    listed = {t["id"]: t for t in node.cli_json("token", "list", token=alice)["tokens"]}
    assert listed[created["id"]]["revoked"] is True
    assert listed[created["id"]]["revoked_at"] == revoked["revoked_at"]
    assert not any(t["revoked"] for i, t in listed.items() if i != created["id"])

    # revoking again changes nothing (it cannot be un-revoked, and the first time is kept)
    again = node.cli_json("token", "revoke", str(created["id"]), token=alice)
    assert again["revoked"] is True and again["revoked_at"] == revoked["revoked_at"]
    assert httpx.get(f"{node.url}/api/whoami", headers=bearer(laptop)).status_code == 401


def test_revoke_by_id_over_http(node: Node, users: dict[str, str]) -> None:
    alice = users["alice"]
    created = node.cli_json("token", "create", "ci", "--read-only", token=alice)
    assert httpx.get(f"{node.url}/api/whoami", headers=bearer(created["token"])).status_code == 200
    reply = httpx.delete(f"{node.url}/api/tokens/{created['id']}", headers=bearer(alice))
    assert reply.status_code == 200, reply.text
    assert reply.json()["revoked"] is True
    assert httpx.get(f"{node.url}/api/whoami", headers=bearer(created["token"])).status_code == 401


def test_nobody_else_can_revoke_or_see_a_token(node: Node, users: dict[str, str]) -> None:
    alice, bob = users["alice"], users["bob"]
    created = node.cli_json("token", "create", "phone", token=alice)
    token_id = str(created["id"])

    # bob gets exactly what he gets for a token that does not exist
    theirs = cli_error(node, "token", "revoke", token_id, token=bob)
    nothing = cli_error(node, "token", "revoke", "999999", token=bob)
    assert theirs["code"] == nothing["code"] == "not_found"
    assert theirs["message"].replace(token_id, "N") == nothing["message"].replace("999999", "N")
    for ref in (token_id, "phone"):
        reply = httpx.delete(f"{node.url}/api/tokens/{ref}", headers=bearer(bob))
        assert reply.status_code == 404, reply.text
        assert "alice" not in reply.text
    # naming alice's account is for admins only
    reply = httpx.delete(f"{node.url}/api/tokens/{token_id}?user=alice", headers=bearer(bob))
    assert reply.status_code == 403
    # anonymous callers are asked for a token
    assert httpx.delete(f"{node.url}/api/tokens/{token_id}").status_code == 401
    # a read-only token of alice's may not revoke her write tokens
    reader = node.cli_json("token", "create", "reader", "--read-only", token=alice)["token"]
    assert httpx.delete(f"{node.url}/api/tokens/{token_id}", headers=bearer(reader)).status_code == 403

    phone = bearer(created["token"])
    assert httpx.get(f"{node.url}/api/whoami", headers=phone).status_code == 200  # still valid

    # the node's admin may revoke it, naming the user
    revoked = node.cli_json("token", "revoke", token_id, "--user", "alice")
    assert revoked["user"] == "alice" and revoked["revoked"] is True
    assert httpx.get(f"{node.url}/api/whoami", headers=phone).status_code == 401


def test_unknown_and_ambiguous_names(node: Node, users: dict[str, str]) -> None:
    alice = users["alice"]
    assert cli_error(node, "token", "revoke", "no-such-token", token=alice)["code"] == "not_found"
    assert httpx.delete(f"{node.url}/api/tokens/424242", headers=bearer(alice)).status_code == 404
    first = node.cli_json("token", "create", "twin", token=alice)
    second = node.cli_json("token", "create", "twin", token=alice)
    error = cli_error(node, "token", "revoke", "twin", token=alice)
    assert error["code"] == "conflict"
    assert str(first["id"]) in error["message"] and str(second["id"]) in error["message"]
    node.cli_json("token", "revoke", str(first["id"]), token=alice)
    # now the name is unambiguous among live tokens
    assert node.cli_json("token", "revoke", "twin", token=alice)["id"] == second["id"]


def test_human_output_names_the_token(node: Node, users: dict[str, str]) -> None:
    alice = users["alice"]
    created = node.cli("token", "create", "tablet", token=alice)
    secret = created.stdout.strip()  # stdout is the secret alone, for $(iollm token create NAME)
    assert secret.startswith("iollm_") and len(secret.split()) == 1
    assert "iollm token revoke" in created.stderr  # the id to revoke it by goes to stderr
    result = node.cli("token", "revoke", "tablet", token=alice)
    assert "tablet" in result.stdout and "revoked" in result.stdout
    assert httpx.get(f"{node.url}/api/whoami", headers=bearer(secret)).status_code == 401


def test_old_database_gains_revoked_at(tmp_path) -> None:
    """A database made before ``revoked_at`` existed is upgraded when the node opens it."""
    from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, inspect

    from iollm.database import open_database
    from iollm.hub import Accounts
    from iollm.hub import metadata as hub_metadata

    db = open_database(tmp_path / "old.sqlite")
    old = MetaData()
    Table(
        "hub_tokens",
        old,
        Column("id", Integer, primary_key=True),
        Column("user_id", Integer, nullable=False),
        Column("name", String(96), nullable=False),
        Column("digest", String(64), nullable=False, unique=True),
        Column("scope", String(8), nullable=False),
        Column("created_at", String(32), nullable=False),
        Column("revoked", Boolean, nullable=False, default=False),
    )
    db.create(old)
    db.create(hub_metadata)  # the other tables; hub_tokens exists and is left as it was
    assert "revoked_at" not in {c["name"] for c in inspect(db.engine).get_columns("hub_tokens")}
    accounts = Accounts(db)
    assert "revoked_at" in {c["name"] for c in inspect(db.engine).get_columns("hub_tokens")}
    Accounts(db)  # idempotent
    accounts.create_user("carol")
    secret = accounts.create_token("carol", "old")
    record = accounts.revoke("carol", "old")
    assert record["revoked"] is True and record["revoked_at"]
    with pytest.raises(Exception, match="revoked"):
        accounts.identify(secret)
    db.dispose()
