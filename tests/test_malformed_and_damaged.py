"""Bad input and bad disks get an answer that names the problem (issue 13, item 9).

A commit whose file list is not a tree is a 400, never a dropped connection; a file whose stored
chunk is damaged is refused by ``hf_hub_download`` with an error that names the damage (not a cut
stream retried until the client gives up), and the next push of the same bytes heals the store.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import httpx
import pytest

from iollm.protocol import NodeClient
from nodes import Node, run_hf

MIB = 1 << 20


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def alice(node: Node) -> str:
    return node.cli_json("user", "create", "alice")["token"]


@pytest.mark.parametrize("second_path", ["model.bin", "model.bin/inner.bin"])
def test_a_file_list_that_is_not_a_tree_is_a_400(
    node: Node, alice: str, tmp_path: Path, second_path: str
) -> None:
    (tmp_path / "model.bin").write_bytes(random.Random(7).randbytes(200_000))
    node.cli_json("push", str(tmp_path / "model.bin"), "alice/tree", token=alice)
    with NodeClient(node.url, alice) as client:
        entry = client.manifest("model", "alice/tree", "main").files[0].model_dump()
    reply = httpx.post(
        f"{node.url}/api/repos/model/alice/tree/commits",
        json={"files": [entry, {**entry, "path": second_path}], "check_parent": False},
        headers=auth(alice),
    )
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    assert "'model.bin'" in message and ("twice" in message or "both a file and a folder" in message)
    # Nothing was recorded: the branch still holds the one file.
    with NodeClient(node.url, alice) as client:
        assert [f.path for f in client.manifest("model", "alice/tree", "main").files] == ["model.bin"]


def damage_chunk_at(node: Node, entry: dict, position: int) -> str:
    """Flip one byte inside the stored chunk that holds file byte ``position``; returns its digest."""
    starts = [0]
    for _, length in entry["chunks"]:
        starts.append(starts[-1] + length)
    digest_hex = next(
        d for (d, _), lo, hi in zip(entry["chunks"], starts, starts[1:], strict=False) if lo <= position < hi
    )
    store = node.home / "store"
    with sqlite3.connect(store / "index.sqlite") as db:
        pack, where, stored = db.execute(
            "SELECT pack, offset, stored FROM chunks WHERE digest = ?", (bytes.fromhex(digest_hex),)
        ).fetchone()
    pack_file = store / "packs" / f"pack-{pack:06d}.pack"
    with open(pack_file, "r+b") as handle:
        handle.seek(where + stored // 2)
        byte = handle.read(1)
        handle.seek(where + stored // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return digest_hex


@pytest.mark.parametrize("damage_at", [100_000, 9 * MIB], ids=["first-block", "mid-stream"])
def test_hf_hub_download_of_a_damaged_chunk_names_the_damage_and_a_push_heals_it(
    node: Node, alice: str, tmp_path: Path, damage_at: int
) -> None:
    repo = f"alice/damaged-{damage_at}"
    data = random.Random(damage_at).randbytes(12 * MIB)  # incompressible: stored as it is
    (tmp_path / "weights.bin").write_bytes(data)
    node.cli_json("push", str(tmp_path / "weights.bin"), repo, token=alice)
    with NodeClient(node.url, alice) as client:
        entry = client.manifest("model", repo, "main").files[0].model_dump()
    digest = damage_chunk_at(node, entry, damage_at)

    out = run_hf(
        node,
        tmp_path,
        f"""
        import time, logging
        retries = []
        logging.getLogger("huggingface_hub").addHandler(type("H", (logging.Handler,), {{"emit": lambda s, r: retries.append(r.getMessage())}})())
        start = time.monotonic()
        try:
            hf_hub_download("{repo}", "weights.bin")
            print(json.dumps({{"error": None}}))
        except Exception as exc:
            print(json.dumps({{"error": type(exc).__name__, "message": str(exc), "retries": len([m for m in retries if "resume" in m])}}))
        """,
        token=alice,
    )
    assert out["error"] == "HfHubHTTPError", out
    assert digest in out["message"] and "weights.bin" in out["message"], out["message"]
    assert "iollm store verify" in out["message"]
    assert out["retries"] <= 1, out  # at most the one resume that learns of the damage

    # The owner pushes the same bytes again: the damaged chunk counts as missing, is sent, replaces
    # the bad copy, and the download succeeds with the genuine bytes.
    report = node.cli_json("push", str(tmp_path / "weights.bin"), repo, token=alice)
    assert report["chunks_sent"] >= 1, report
    healed = run_hf(
        node,
        tmp_path,
        f"""
        path = hf_hub_download("{repo}", "weights.bin", force_download=True)
        print(json.dumps({{"path": path}}))
        """,
        token=alice,
    )
    assert hashlib.sha256(Path(healed["path"]).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    verify = node.cli_json("store", "verify")
    assert verify["ok"], verify
