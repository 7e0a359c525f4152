"""Content trust (issue 13, critical items): a hash is proven, never trusted, and private bytes stay private.

Real node, real clients: the iollm CLI and ``NodeClient`` for native pushes, the unmodified
``huggingface_hub`` for Hugging Face uploads and downloads, httpx for the raw requests an attacker sends.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path

import httpx
import pytest

from iollm.protocol import MissingChunks, NodeClient
from iollm.store import chunk_id, digest_buffer
from nodes import Node, run_hf


def noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def tokens(node: Node) -> dict[str, str]:
    return {name: node.cli_json("user", "create", name)["token"] for name in ("alice", "bob")}


def hf_commit(node: Node, token: str, repo_id: str, operations: list[dict]) -> httpx.Response:
    """The request huggingface_hub's create_commit sends: ndjson header + operations."""
    lines = [{"key": "header", "value": {"summary": "commit", "description": ""}}, *operations]
    return httpx.post(
        f"{node.url}/api/models/{repo_id}/commit/main",
        content="\n".join(json.dumps(line) for line in lines).encode(),
        headers={**auth(token), "Content-Type": "application/x-ndjson"},
    )


def lfs_batch(node: Node, token: str, repo_id: str, oid: str, size: int) -> dict:
    reply = httpx.post(
        f"{node.url}/{repo_id}.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]},
        headers={**auth(token), "Accept": "application/vnd.git-lfs+json"},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()["objects"][0]


def test_a_commit_cannot_name_someone_elses_private_content_by_its_hash(
    node: Node, tokens: dict[str, str], tmp_path: Path
) -> None:
    """Item 1: knowing the SHA-256 (or the chunk ids) of a private file is not a right to its bytes."""
    alice, bob = tokens["alice"], tokens["bob"]
    secret = noise(300_000, 101)
    (tmp_path / "secret.bin").write_bytes(secret)
    node.cli_json("push", str(tmp_path / "secret.bin"), "alice/vault", "--private", token=alice)
    oid, size = sha256(secret), len(secret)
    assert (
        httpx.post(f"{node.url}/api/repos/create", json={"name": "x"}, headers=auth(bob)).status_code == 200
    )

    # Over the HF API: an lfsFile naming Alice's oid is refused exactly like an oid never uploaded...
    stolen = hf_commit(
        node,
        bob,
        "bob/x",
        [{"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256", "oid": oid, "size": size}}],
    )
    assert stolen.status_code == 400, stolen.text
    never = hf_commit(
        node,
        bob,
        "bob/x",
        [{"key": "lfsFile", "value": {"path": "n.bin", "algo": "sha256", "oid": "ab" * 32, "size": 5}}],
    )
    assert never.status_code == stolen.status_code and "never uploaded" in never.json()["error"]
    assert "never uploaded" in stolen.json()["error"]
    download = httpx.get(f"{node.url}/bob/x/resolve/main/stolen.bin")
    assert download.status_code == 404 and secret not in download.content
    # ...and the LFS batch does not say "already there" (an existence oracle): Bob must upload bytes.
    assert "upload" in lfs_batch(node, bob, "bob/x", oid, size).get("actions", {})

    # Over the native API: the chunk list of Alice's file (with its true SHA-256) is refused as missing.
    with NodeClient(node.url, alice) as owner:
        entry = owner.manifest("model", "alice/vault", "main").files[0].model_dump()
    with NodeClient(node.url, bob) as thief, pytest.raises(MissingChunks):
        thief.commit("model", "bob/native-theft", {"files": [entry], "check_parent": False})
    assert httpx.get(f"{node.url}/bob/native-theft/resolve/main/secret.bin").status_code == 404

    # What the rule allows: Alice reuses her own content by oid, Bob reuses public content by oid,
    # and Bob commits the secret once he has uploaded its bytes himself (he then already had them).
    assert (
        httpx.post(
            f"{node.url}/api/repos/create", json={"name": "copy", "private": True}, headers=auth(alice)
        ).status_code
        == 200
    )
    own = hf_commit(
        node,
        alice,
        "alice/copy",
        [{"key": "lfsFile", "value": {"path": "s.bin", "algo": "sha256", "oid": oid, "size": size}}],
    )
    assert own.status_code == 200, own.text
    public = noise(200_000, 102)
    (tmp_path / "public.bin").write_bytes(public)
    node.cli_json("push", str(tmp_path / "public.bin"), "alice/open", token=alice)
    reuse = hf_commit(
        node,
        bob,
        "bob/x",
        [
            {
                "key": "lfsFile",
                "value": {"path": "p.bin", "algo": "sha256", "oid": sha256(public), "size": len(public)},
            }
        ],
    )
    assert reuse.status_code == 200, reuse.text
    assert httpx.get(f"{node.url}/bob/x/resolve/main/p.bin").content == public
    pushed = node.cli_json("push", str(tmp_path / "secret.bin"), "bob/had-it", token=bob)
    assert pushed["bytes_sent"] == size  # every byte came from Bob, though the node already held them
    assert httpx.get(f"{node.url}/bob/had-it/resolve/main/secret.bin").content == secret


def test_a_false_sha256_is_refused_and_cannot_squat_a_hash(
    node: Node, tokens: dict[str, str], tmp_path: Path
) -> None:
    """Item 2: the node hashes the bytes itself; a lie about a file's SHA-256 or chunking is refused."""
    alice, bob = tokens["alice"], tokens["bob"]
    genuine = noise(400_000, 201)
    evil = noise(400_000, 202)
    (tmp_path / "model.bin").write_bytes(evil)
    node.cli_json("push", str(tmp_path / "model.bin"), "bob/evil", token=bob)
    with NodeClient(node.url, bob) as client:
        entry = client.manifest("model", "bob/evil", "main").files[0].model_dump()
    lie = {**entry, "sha256": sha256(genuine)}
    url = f"{node.url}/api/repos/model/bob/evil/commits"
    refused = httpx.post(url, json={"files": [lie], "check_parent": False}, headers=auth(bob))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "integrity_error", refused.text
    assert sha256(genuine) in refused.json()["error"]["message"]
    # The true hash with lying chunk lengths (same total) is refused too: offsets would be wrong.
    chunks = [list(c) for c in entry["chunks"]]
    assert len(chunks) > 1
    chunks[0][1] -= 1
    chunks[1][1] += 1
    shifted = httpx.post(
        url, json={"files": [{**entry, "chunks": chunks}], "check_parent": False}, headers=auth(bob)
    )
    assert shifted.status_code == 422, shifted.text
    with NodeClient(node.url, bob) as client:
        assert client.manifest("model", "bob/evil", "main").files[0].sha256 == sha256(evil)

    # Alice uploads the genuine file with huggingface_hub: it is uploaded, and served back, unpoisoned.
    (tmp_path / "genuine.bin").write_bytes(genuine)
    out = run_hf(
        node,
        tmp_path,
        f"""
        api = HfApi()
        api.create_repo("alice/victim")
        api.upload_file(path_or_fileobj="{tmp_path / "genuine.bin"}", path_in_repo="model.bin", repo_id="alice/victim")
        path = hf_hub_download("alice/victim", "model.bin")
        info = api.model_info("alice/victim", files_metadata=True)
        print(json.dumps({{"path": path, "sha": [s.lfs.sha256 for s in info.siblings if s.lfs][0]}}))
        """,
        token=alice,
    )
    assert Path(out["path"]).read_bytes() == genuine
    assert out["sha"] == sha256(genuine)


def test_chunk_endpoints_need_a_token_and_serve_only_what_the_caller_can_read(
    node: Node, tokens: dict[str, str], tmp_path: Path
) -> None:
    """Item 3: no anonymous dedup oracle, no reader of private chunks; public content still flows."""
    alice, bob = tokens["alice"], tokens["bob"]
    pins = [f"PIN {n:04d}\n".encode() for n in range(10_000)]
    secret = pins[4821]
    (tmp_path / "pin.txt").write_bytes(secret)
    node.cli_json("push", str(tmp_path / "pin.txt"), "alice/pin", "--private", token=alice)
    candidates = [chunk_id(p).hex() for p in pins]
    target = chunk_id(secret)

    asked = httpx.post(f"{node.url}/api/chunks/missing", json={"chunks": candidates})
    assert asked.status_code == 401, asked.text[:200]
    fetched = httpx.post(f"{node.url}/api/chunks/fetch", json={"chunks": [target.hex()]})
    assert fetched.status_code != 200 and secret not in fetched.content

    with NodeClient(node.url, bob) as client:
        # With a token: every candidate looks missing, the real one included.
        assert set(client.missing_chunks([bytes.fromhex(c) for c in candidates])) == {
            bytes.fromhex(c) for c in candidates
        }
        with pytest.raises(MissingChunks):
            client.open_chunk_stream([target])
        # Uploading tells nothing either: a chunk the node holds privately answers like a new one.
        fresh = noise(1000, 301)
        assert client.upload_chunks([(chunk_id(fresh), fresh)]) == client.upload_chunks([(target, secret)])
    with NodeClient(node.url, alice) as client:
        assert client.missing_chunks([target]) == []
        stream = client.open_chunk_stream([target])
        try:
            assert stream.read() == secret
        finally:
            stream.close()

    # Public content: anonymous fetch still works (mirrors and anonymous pulls rely on it).
    public = noise(100_000, 302)
    (tmp_path / "open.bin").write_bytes(public)
    node.cli_json("push", str(tmp_path / "open.bin"), "alice/open-chunks", token=alice)
    digests = [c.digest for c in digest_buffer(public).chunks]
    served = httpx.post(f"{node.url}/api/chunks/fetch", json={"chunks": [d.hex() for d in digests]})
    assert served.status_code == 200 and served.content == public
    pulled = node.cli_json(
        "pull",
        "alice/open-chunks",
        "--dest",
        str(tmp_path / "anon"),
        token="",
        IOLLM_HOME=str(tmp_path / "h"),
    )
    assert pulled["files"] == 1 and (tmp_path / "anon" / "open.bin").read_bytes() == public


def test_repositories_committed_before_the_read_index_stay_readable(node_factory, tmp_path: Path) -> None:
    """Upgrade: a node whose commits predate ``hub_repo_chunks`` indexes them once at start, so their
    owners (and, for public repositories, anyone) can still pull them chunk by chunk."""
    old = node_factory("--no-seed", name="upgraded")
    owner = old.cli_json("user", "create", "olga")["token"]
    data = noise(500_000, 401)
    public = noise(300_000, 402)
    (tmp_path / "w.bin").write_bytes(data)
    (tmp_path / "p.bin").write_bytes(public)
    old.cli_json("push", str(tmp_path / "w.bin"), "olga/private", "--private", token=owner)
    old.cli_json("push", str(tmp_path / "p.bin"), "local/public")
    old.stop()
    with sqlite3.connect(old.home / "node.sqlite") as db:  # what a node of the previous version left
        db.execute("DELETE FROM hub_repo_chunks")
        db.execute("DELETE FROM hub_meta")
    old.start()
    pulled = old.cli_json("pull", "olga/private", "--dest", str(tmp_path / "mine"), token=owner)
    assert pulled["files"] == 1 and (tmp_path / "mine" / "w.bin").read_bytes() == data
    digests = [c.digest.hex() for c in digest_buffer(public).chunks]
    served = httpx.post(f"{old.url}/api/chunks/fetch", json={"chunks": digests})
    assert served.status_code == 200 and served.content == public
    hidden = [c.digest.hex() for c in digest_buffer(data).chunks]
    assert httpx.post(f"{old.url}/api/chunks/fetch", json={"chunks": hidden}).status_code == 400
