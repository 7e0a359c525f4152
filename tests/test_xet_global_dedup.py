"""Xet global dedup (GET /v1/chunks/{prefix}/{hash}): the unmodified hf_xet, with an empty shard cache,
dedups a new upload against xorbs another upload put on the node; a caller who cannot read a file
never learns of its chunks; the answer is a shard hf_xet and the node's own reader parse."""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

import httpx
import pytest

from iollm.hub.xet.format import SHARD_TAG, from_hex, parse_shard, parse_xorb, to_hex
from iollm.hub.xet.shard_writer import (
    FOOTER_SIZE,
    CasBlock,
    dedup_eligible,
    keyed,
    read_dedup_shard,
    write_dedup_shard,
)
from nodes import Node, run_hf

MiB = 1 << 20
APPENDED = 200_000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stats(node: Node) -> dict[str, int]:
    response = httpx.get(f"{node.url}/api/xet/stats", headers={"Authorization": f"Bearer {node.token}"})
    response.raise_for_status()
    return response.json()


def xet_token(node: Node, repo: str, mode: str, token: str) -> dict[str, str]:
    response = httpx.get(
        f"{node.url}/api/models/{repo}/xet-{mode}-token/main", headers={"Authorization": f"Bearer {token}"}
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


def upload(node: Node, home: Path, path: Path, repo: str, token: str, private: bool) -> None:
    run_hf(
        node,
        home,  # a new folder each time: HF_HOME there, so hf_xet starts with an empty shard cache
        f"""
        api = HfApi()
        api.create_repo("{repo}", private={private}, exist_ok=True)
        api.upload_file(path_or_fileobj="{path}", path_in_repo="{path.name}", repo_id="{repo}")
        print(json.dumps({{}}))
        """,
        token=token,
    )


@pytest.fixture(scope="module")
def users(node: Node) -> dict[str, str]:
    return {name: node.cli_json("user", "create", name)["token"] for name in ("alice", "bob")}


@pytest.fixture(scope="module")
def first(node: Node, users: dict[str, str], tmp_path_factory) -> dict:
    """Alice uploads a 3 MiB random file to her private repository."""
    folder = tmp_path_factory.mktemp("dedup-first")
    data = random.Random(41).randbytes(3 * MiB)
    (folder / "data.bin").write_bytes(data)
    before = stats(node)
    upload(node, folder / "client", folder / "data.bin", "alice/private-a", users["alice"], private=True)
    return {"data": data, "sent": stats(node)["xorb_bytes"] - before["xorb_bytes"]}


def first_chunk(node: Node, token: str, repo: str) -> tuple[str, bytes]:
    """(xorb, first chunk hash) of the file in ``repo``, through the Xet download API."""
    head = httpx.head(
        f"{node.url}/{repo}/resolve/main/data.bin", headers={"Authorization": f"Bearer {token}"}
    )
    head.raise_for_status()
    auth = xet_token(node, repo, "read", token)
    plan = httpx.get(f"{node.url}/v1/reconstructions/{head.headers['X-Xet-Hash']}", headers=auth).json()
    xorb = plan["terms"][0]["hash"]
    fetch = plan["fetch_info"][xorb][0]
    span = fetch["url_range"]
    body = httpx.get(fetch["url"], headers={"Range": f"bytes={span['start']}-{span['end']}"}).content
    return xorb, parse_xorb(body)[0].hash


def test_fresh_client_dedups_against_another_upload_through_the_global_query(
    node: Node, users: dict[str, str], first: dict, tmp_path: Path
) -> None:
    assert first["sent"] >= len(first["data"]) // 2  # the first upload really sent the file
    second = tmp_path / "data.bin"
    content = first["data"] + random.Random(42).randbytes(APPENDED)
    second.write_bytes(content)
    before = stats(node)
    upload(node, tmp_path / "fresh-client", second, "alice/second", users["alice"], private=True)
    after = stats(node)
    sent = after["xorb_bytes"] - before["xorb_bytes"]
    print(f"\nsecond upload: file {len(content)} bytes, sent {sent} bytes (xorbs + shard)")
    assert after["dedup_answers"] > before["dedup_answers"]  # hf_xet asked, and the node answered
    assert sent < len(content) // 4, f"sent {sent} of {len(content)} bytes"
    out = run_hf(
        node,
        tmp_path / "reader",
        f"""
        path = hf_hub_download("alice/second", "data.bin", cache_dir="{tmp_path / "dl"}")
        print(json.dumps({{"path": path}}))
        """,
        token=users["alice"],
    )
    assert sha256(Path(out["path"]).read_bytes()) == sha256(content)


def test_global_query_answers_only_callers_who_may_reference_the_xorb(
    node: Node, users: dict[str, str], first: dict, tmp_path: Path
) -> None:
    xorb, chunk = first_chunk(node, users["alice"], "alice/private-a")
    url = f"{node.url}/v1/chunks/default-merkledb/{to_hex(chunk)}"
    mine = httpx.get(url, headers=xet_token(node, "alice/private-a", "write", users["alice"]))
    assert mine.status_code == 200, mine.text
    shard = read_dedup_shard(mine.content)
    assert from_hex(xorb) in shard.xorbs and any(shard.key)
    assert keyed(chunk, shard.key) in [h for h, _, _ in shard.xorbs[from_hex(xorb)]]
    assert chunk not in mine.content  # chunk hashes are listed keyed, never raw
    # Bob cannot read alice/private-a: his token (read/write, on his own repository) learns nothing
    run_hf(node, tmp_path, 'HfApi().create_repo("bob/mine")\nprint("{}")', token=users["bob"])
    for mode in ("write", "read"):
        theirs = httpx.get(url, headers=xet_token(node, "bob/mine", mode, users["bob"]))
        assert theirs.status_code == 404, theirs.status_code
    unknown = httpx.get(
        f"{node.url}/v1/chunks/default-merkledb/{'0' * 64}",
        headers=xet_token(node, "alice/private-a", "write", users["alice"]),
    )
    assert unknown.status_code == 404
    assert httpx.get(url).status_code == 401  # no Xet token at all


def test_dedup_shard_parses_back() -> None:
    rng = random.Random(43)
    blocks = [
        CasBlock(rng.randbytes(32), [(rng.randbytes(32), rng.randrange(8000, 131072)) for _ in range(n)], 999)
        for n in (3, 40)
    ]
    key = rng.randbytes(32)
    body = write_dedup_shard(blocks, key, 1000, 2000)
    assert body[:32] == SHARD_TAG and struct.unpack_from("<QQ", body, 32) == (2, FOOTER_SIZE)
    assert parse_shard(body) == []  # the repo's own reader: an empty file section, then a footer
    shard = read_dedup_shard(body)
    assert (shard.key, shard.created, shard.expiry) == (key, 1000, 2000)
    assert set(shard.xorbs) == {b.hash for b in blocks}
    for block in blocks:
        entries = shard.xorbs[block.hash]
        assert len(entries) == len(block.chunks)
        assert [h for h, _, _ in entries] == [keyed(h, key) for h, _ in block.chunks]
        assert [n for _, _, n in entries] == [n for _, n in block.chunks]
        starts = [s for _, s, _ in entries]
        assert starts[0] == 0 and all(
            b - a == n for a, b, (_, n) in zip(starts, starts[1:], block.chunks, strict=False)
        )
    # the footer's lookup tables point at the blocks, as hf_xet's reader uses them
    footer = len(body) - FOOTER_SIZE
    words = struct.unpack_from("<9Q", body, footer)
    cas_offset, cas_count, chunk_offset, chunk_count = words[5], words[6], words[7], words[8]
    assert (cas_count, chunk_count) == (2, 43)
    keys = [struct.unpack_from("<QII", body, chunk_offset + 16 * i) for i in range(chunk_count)]
    assert [k for k, _, _ in keys] == sorted(k for k, _, _ in keys)
    for word, block_at, i in keys:
        base = words[2] + 48 * (block_at + 1 + i)
        assert struct.unpack_from("<Q", body, base)[0] == word
    for j in range(cas_count):
        word, block_at = struct.unpack_from("<QI", body, cas_offset + 12 * j)
        assert struct.unpack_from("<Q", body, words[2] + 48 * block_at)[0] == word
    # Xet's eligibility rule: the hash's last 8 bytes, little-endian, a multiple of 1024
    assert dedup_eligible(bytes(24) + (5 * 1024).to_bytes(8, "little"))
    assert not dedup_eligible(bytes(24) + (5 * 1024 + 1).to_bytes(8, "little"))
