"""The unmodified huggingface_hub on its defaults (hf_xet installed) uploads and downloads through the
node's Xet CAS: round trips by SHA-256, dedup of a second version, dedup with a native push, refusal of
forged xorbs and shards, and read tokens scoped to one repository."""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

import httpx
import pytest

from iollm.hub.xet.format import SHARD_TAG, chunk_hash, file_hash, from_hex, merkle_root, to_hex
from nodes import Node, run_hf

MiB = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stats(node: Node) -> dict[str, int]:
    response = httpx.get(f"{node.url}/api/xet/stats", headers={"Authorization": f"Bearer {node.token}"})
    response.raise_for_status()
    return response.json()


def xet_token(node: Node, repo: str, mode: str, token: str | None = None) -> str:
    response = httpx.get(
        f"{node.url}/api/models/{repo}/xet-{mode}-token/main",
        headers={"Authorization": f"Bearer {token or node.token}"},
    )
    response.raise_for_status()
    body = response.json()
    assert body["casUrl"] == node.url and body["exp"] > 0
    assert response.headers["X-Xet-Access-Token"] == body["accessToken"]
    return body["accessToken"]


def xet_hash_of(node: Node, repo: str, path: str) -> str:
    response = httpx.head(
        f"{node.url}/{repo}/resolve/main/{path}", headers={"Authorization": f"Bearer {node.token}"}
    )
    response.raise_for_status()
    assert "xet-read-token" in response.headers["X-Xet-Refresh-Route"]
    return response.headers["X-Xet-Hash"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("xet-model")
    (folder / "weights.bin").write_bytes(random.Random(16).randbytes(8 * MiB))
    (folder / "config.json").write_text('{"model_type": "test"}\n')
    return folder


@pytest.fixture(scope="module")
def uploaded(node: Node, weights: Path, tmp_path_factory) -> dict:
    """upload_folder with Xet (the client's default), then hf_hub_download back through Xet."""
    home = tmp_path_factory.mktemp("hf-client")
    before = stats(node)
    out = run_hf(
        node,
        home,
        f"""
        api = HfApi()
        api.create_repo("local/xet-model")
        api.upload_folder(folder_path="{weights}", repo_id="local/xet-model")
        info = api.model_info("local/xet-model", files_metadata=True)
        path = hf_hub_download("local/xet-model", "weights.bin", cache_dir="{home / "dl"}")
        small = hf_hub_download("local/xet-model", "config.json", cache_dir="{home / "dl"}")
        print(json.dumps({{"path": path, "small": small,
                           "lfs": {{s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs}}}}))
        """,
    )
    return {"home": home, "out": out, "before": before, "after": stats(node)}


def test_upload_folder_and_download_through_xet_round_trip(node: Node, weights: Path, uploaded: dict) -> None:
    data = (weights / "weights.bin").read_bytes()
    out, before, after = uploaded["out"], uploaded["before"], uploaded["after"]
    assert sha256(Path(out["path"]).read_bytes()) == sha256(data)
    assert Path(out["small"]).read_text() == (weights / "config.json").read_text()
    assert out["lfs"]["weights.bin"] == sha256(data)  # the node computed it from the stored bytes
    assert after["xorb_bytes"] - before["xorb_bytes"] >= len(data)  # the bytes went through Xet
    assert after["served_bytes"] - before["served_bytes"] >= len(data)  # and came back through it
    xet_hash = xet_hash_of(node, "local/xet-model", "weights.bin")
    assert len(xet_hash) == 64
    # the same file is the node's own: native pull reads it, plain resolve serves it
    pulled = node.cli_json("pull", "local/xet-model", "--dest", str(uploaded["home"] / "native"))
    assert pulled["files"] == 2
    assert sha256((uploaded["home"] / "native" / "weights.bin").read_bytes()) == sha256(data)
    plain = httpx.get(
        f"{node.url}/local/xet-model/resolve/main/weights.bin", headers={"Range": "bytes=100-199"}
    )
    assert plain.status_code == 206 and plain.content == data[100:200]


def test_second_version_with_one_percent_changed_sends_about_the_change(
    node: Node, weights: Path, uploaded: dict, tmp_path: Path
) -> None:
    data = bytearray((weights / "weights.bin").read_bytes())
    changed = len(data) // 100
    data[3 * MiB : 3 * MiB + changed] = random.Random(17).randbytes(changed)
    second = tmp_path / "weights.bin"
    second.write_bytes(bytes(data))
    before = stats(node)
    out = run_hf(
        node,
        uploaded["home"],  # the same client machine: hf_xet dedups against the shards it uploaded
        f"""
        api = HfApi()
        api.upload_file(path_or_fileobj="{second}", path_in_repo="weights.bin", repo_id="local/xet-model")
        path = hf_hub_download("local/xet-model", "weights.bin", cache_dir="{tmp_path / "dl"}")
        print(json.dumps({{"path": path}}))
        """,
    )
    sent = stats(node)["xorb_bytes"] - before["xorb_bytes"]
    assert sha256(Path(out["path"]).read_bytes()) == sha256(bytes(data))
    assert sent < 5 * changed, f"sent {sent} bytes for {changed} changed"  # whole file: 100x changed


def test_native_push_of_a_file_uploaded_through_xet_sends_nothing(
    node: Node, weights: Path, uploaded: dict
) -> None:
    pushed = node.cli_json("push", str(weights / "weights.bin"), "local/native-copy")
    assert pushed["chunks_sent"] == 0 and pushed["bytes_sent"] == 0


def _xorb(chunks: list[bytes]) -> bytes:
    return b"".join(
        b"\x00" + len(c).to_bytes(3, "little") + b"\x00" + len(c).to_bytes(3, "little") + c for c in chunks
    )


def test_forged_xorbs_and_shards_are_refused(node: Node, uploaded: dict) -> None:
    token = xet_token(node, "local/xet-model", "write")
    auth = {"Authorization": f"Bearer {token}"}
    chunks = [random.Random(18).randbytes(10_000), random.Random(19).randbytes(20_000)]
    entries = [(chunk_hash(c), len(c)) for c in chunks]
    good = to_hex(merkle_root(entries))
    wrong = to_hex(merkle_root(entries[:1]))
    forged = httpx.post(f"{node.url}/v1/xorbs/default/{wrong}", content=_xorb(chunks), headers=auth)
    assert forged.status_code == 422, forged.text
    tampered = bytearray(_xorb(chunks))
    tampered[-1] ^= 1  # bytes that no longer hash to the name
    assert (
        httpx.post(f"{node.url}/v1/xorbs/default/{good}", content=bytes(tampered), headers=auth).status_code
        == 422
    )
    assert httpx.post(f"{node.url}/v1/xorbs/default/{good}", content=_xorb(chunks), headers=auth).json() == {
        "was_inserted": True
    }
    # a read token, or none, cannot upload
    read = {"Authorization": f"Bearer {xet_token(node, 'local/xet-model', 'read')}"}
    assert (
        httpx.post(f"{node.url}/v1/xorbs/default/{good}", content=_xorb(chunks), headers=read).status_code
        == 403
    )
    assert httpx.post(f"{node.url}/v1/xorbs/default/{good}", content=_xorb(chunks)).status_code == 401

    def shard(claimed: bytes, xorb: str, end: int, unpacked: int) -> bytes:
        header = SHARD_TAG + struct.pack("<QQ", 2, 0)
        block = claimed + struct.pack("<IIQ", 0, 1, 0)
        term = from_hex(xorb) + struct.pack("<IIII", 0, unpacked, 0, end)
        bookend = b"\xff" * 32 + bytes(16)
        return header + block + term + bookend + bookend

    total = sum(len(c) for c in chunks)
    lying = shard(file_hash(entries[:1]), good, 2, total)  # file hash of other chunks
    assert httpx.post(f"{node.url}/v1/shards", content=lying, headers=auth).status_code == 422
    elsewhere = shard(file_hash(entries), to_hex(bytes(32)), 2, total)  # a xorb never uploaded
    assert httpx.post(f"{node.url}/v1/shards", content=elsewhere, headers=auth).status_code == 422
    honest = shard(file_hash(entries), good, 2, total)
    assert httpx.post(f"{node.url}/v1/shards", content=honest, headers=auth).json() == {"result": 1}


def test_a_read_token_of_one_repository_cannot_fetch_another_ones_file(
    node: Node, uploaded: dict, tmp_path: Path
) -> None:
    (tmp_path / "other.bin").write_bytes(random.Random(20).randbytes(2 * MiB))
    run_hf(
        node,
        tmp_path,
        f"""
        api = HfApi()
        api.create_repo("local/xet-other", private=True)
        api.upload_file(path_or_fileobj="{tmp_path / "other.bin"}", path_in_repo="other.bin", repo_id="local/xet-other")
        print(json.dumps({{}}))
        """,
    )
    other = xet_hash_of(node, "local/xet-other", "other.bin")
    mine = xet_hash_of(node, "local/xet-model", "weights.bin")
    token_a = {"Authorization": f"Bearer {xet_token(node, 'local/xet-model', 'read')}"}
    token_b = {"Authorization": f"Bearer {xet_token(node, 'local/xet-other', 'read')}"}
    assert httpx.get(f"{node.url}/v1/reconstructions/{other}", headers=token_a).status_code == 404
    assert httpx.get(f"{node.url}/v1/reconstructions/{mine}", headers=token_b).status_code == 404
    ok = httpx.get(f"{node.url}/v1/reconstructions/{other}", headers=token_b)
    assert ok.status_code == 200 and ok.json()["terms"]
    # anonymous callers get no token for a private repository
    assert httpx.get(f"{node.url}/api/models/local/xet-other/xet-read-token/main").status_code in (401, 404)
    forged = token_a["Authorization"][:-4] + "0000"
    assert (
        httpx.get(f"{node.url}/v1/reconstructions/{mine}", headers={"Authorization": forged}).status_code
        == 401
    )
