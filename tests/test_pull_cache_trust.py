"""The client cache hands out only bytes it has verified (security issue 13, item 6).

Through the real CLI: an edited pulled copy, an edited snapshot inside the cache, and a blob damaged on
disk (truncated, overwritten, overwritten with its times put back) never reach the next pull; the
damaged blob is fetched again and healed.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path

import pytest

from iollm.protocol import LocalCache
from iollm.protocol import cache as cache_module
from nodes import Node

SIZE = 3 << 20


def noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def overwrite(path: Path, offset: int, data: bytes) -> None:
    """Edit a file in place the way root can, whatever its mode."""
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


@pytest.fixture
def client(node: Node, tmp_path: Path):
    """Run the CLI as a client with its own home (and so its own cache)."""
    home = tmp_path / "client-home"

    def run(*args: str) -> dict:
        return node.cli_json(*args, IOLLM_HOME=str(home), IOLLM_TOKEN=node.token)

    run.home = home  # type: ignore[attr-defined]
    return run


def pushed(node: Node, tmp_path: Path, repo: str, seed: int) -> tuple[bytes, str]:
    data = noise(SIZE, seed)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "w.bin").write_bytes(data)
    (folder / "config.json").write_text('{"model_type": "toy"}')
    node.cli_json("push", str(folder), repo)
    return data, hashlib.sha256(data).hexdigest()


def test_edited_pulled_copy_does_not_poison_the_next_pull(node: Node, client, tmp_path: Path) -> None:
    _, genuine = pushed(node, tmp_path, "local/trust-copy", 1)
    client("pull", "local/trust-copy", "--dest", str(tmp_path / "a"))
    edited = tmp_path / "a" / "w.bin"
    assert not os.path.samefile(edited, client.home / "cache" / "blobs" / genuine)  # a copy of its own
    overwrite(edited, SIZE // 2, b"poison" * 100)
    overwrite(tmp_path / "a" / "config.json", 0, b'{"model_type": "evil", "more": 1}')
    b = client("pull", "local/trust-copy", "--dest", str(tmp_path / "b"))
    assert b["files"] == 2
    assert sha(tmp_path / "b" / "w.bin") == genuine
    assert (tmp_path / "b" / "config.json").read_text() == '{"model_type": "toy"}'
    assert sha(edited) != genuine  # the user's edit is theirs to keep
    overwrite(edited, 0, b"later edit")  # editing one pulled folder never changes another
    assert sha(tmp_path / "b" / "w.bin") == genuine
    again = client("pull", "local/trust-copy", "--dest", str(tmp_path / "a"))  # a re-pull restores
    assert again["files"] == 2 and sha(edited) == genuine


def test_edited_snapshot_in_the_cache_is_not_reused(node: Node, client, tmp_path: Path) -> None:
    _, genuine = pushed(node, tmp_path, "local/trust-snapshot", 2)
    first = client("pull", "local/trust-snapshot")  # no --dest: a snapshot folder inside the cache
    snapshot = Path(first["path"]) / "w.bin"
    assert sha(snapshot) == genuine
    assert os.path.samefile(snapshot, client.home / "cache" / "blobs" / genuine)  # no second copy
    overwrite(snapshot, 1000, b"edited in the snapshot")
    b = client("pull", "local/trust-snapshot", "--dest", str(tmp_path / "b"))
    assert sha(tmp_path / "b" / "w.bin") == genuine
    assert b["bytes_received"] > 0  # the edit reached the cache's blob, so it was fetched again
    again = client("pull", "local/trust-snapshot")
    assert again["path"] == first["path"] and sha(snapshot) == genuine


def _age(path: Path, seconds: int = 3600) -> None:
    """Make a blob look long settled, as on a later day (its times far from when it was recorded)."""
    old = path.stat().st_mtime_ns - seconds * 10**9
    os.utime(path, ns=(old, old))


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "overwrite-keeping-times", "untouched"])
def test_damaged_blob_is_fetched_again(node: Node, client, tmp_path: Path, damage: str) -> None:
    repo = f"local/trust-{damage}"
    _, genuine = pushed(node, tmp_path, repo, 3)
    client("pull", repo, "--dest", str(tmp_path / "a"))
    blob = client.home / "cache" / "blobs" / genuine
    assert sha(blob) == genuine
    _age(blob)
    settled = client("pull", repo, "--dest", str(tmp_path / "a2"))  # records the blob's settled state
    assert settled["bytes_received"] == 0 and sha(tmp_path / "a2" / "w.bin") == genuine
    before = blob.stat()
    if damage == "truncate":
        os.truncate(blob, SIZE // 3)
    elif damage == "overwrite":
        overwrite(blob, SIZE - 10, b"0123456789")
    elif damage == "overwrite-keeping-times":
        overwrite(blob, 5, b"same size, same mtime")
        os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert blob.stat().st_mtime_ns == before.st_mtime_ns and blob.stat().st_size == SIZE
    b = client("pull", repo, "--dest", str(tmp_path / "b"))
    assert sha(tmp_path / "b" / "w.bin") == genuine
    assert sha(blob) == genuine  # the cache is healed
    if damage == "untouched":
        assert b["bytes_received"] == 0  # a settled, unchanged blob is reused as it is
    else:
        assert b["bytes_received"] > 0
        if damage.startswith("overwrite"):  # the blob's intact chunks were kept, as for a resume
            assert b["bytes_resumed"] > 0 and b["bytes_received"] < SIZE // 2


def test_chunks_reused_from_an_edited_blob_are_checked(node: Node, client, tmp_path: Path) -> None:
    """Dedup on download reads chunks out of other cached files; an edited one is not trusted."""
    v1 = noise(16 << 20, 4)
    (tmp_path / "w.bin").write_bytes(v1)
    first = node.cli_json("push", str(tmp_path / "w.bin"), "local/trust-dedup")
    client("pull", "local/trust-dedup", "--dest", str(tmp_path / "a"))
    v2 = bytearray(v1)
    v2[8 << 20 : (8 << 20) + 100_000] = noise(100_000, 5)
    (tmp_path / "w.bin").write_bytes(bytes(v2))
    node.cli_json("push", str(tmp_path / "w.bin"), "local/trust-dedup", "-m", "v2")
    clean_home = {"IOLLM_HOME": str(tmp_path / "clean-home"), "IOLLM_TOKEN": node.token}
    node.cli_json(
        "pull", "local/trust-dedup@" + first["commit"], "--dest", str(tmp_path / "c1"), **clean_home
    )
    clean = node.cli_json("pull", "local/trust-dedup", "--dest", str(tmp_path / "c2"), **clean_home)
    blob = client.home / "cache" / "blobs" / hashlib.sha256(v1).hexdigest()
    overwrite(blob, 2 << 20, b"x" * 1000)  # a chunk of v1 that v2 shares
    b = client("pull", "local/trust-dedup", "--dest", str(tmp_path / "b"))
    assert (tmp_path / "b" / "w.bin").read_bytes() == bytes(v2)
    assert b["bytes_received"] > clean["bytes_received"]  # the damaged shared chunk came from the node


def test_settled_blob_is_reused_without_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick check (size, mtime, ctime, inode) spares a full hash of an unchanged blob; any
    change to those means a full hash, and a mismatch removes the blob."""
    cache = LocalCache(tmp_path / "cache")
    data = noise(1 << 20, 6)
    digest = hashlib.sha256(data).hexdigest()
    blob = cache.blob_path(digest)
    blob.write_bytes(data)
    _age(blob)
    cache.add_blob(digest, [(b"\x01" * 32, len(data))])
    assert cache.locate([b"\x01" * 32]) == {b"\x01" * 32: (blob, 0, len(data))}
    hashed: list[Path] = []
    real = cache_module.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(cache_module, "sha256_file", counting)
    assert cache.has_blob(digest, len(data)) and hashed == []
    before = blob.stat()
    os.link(blob, tmp_path / "snapshot-file")  # what a pull into the cache's snapshot folder does
    cache.linked(digest, before)
    assert cache.has_blob(digest, len(data)) and hashed == []
    os.utime(blob)  # touched: hashed in full, and still good
    assert cache.has_blob(digest, len(data)) and len(hashed) == 1
    assert not cache.has_blob(digest, len(data) + 1)  # a claim of another size is not this blob
    assert blob.exists()  # but the blob itself is fine and stays
    overwrite(blob, 0, b"bad")  # through the link: the snapshot file is edited too
    assert not cache.has_blob(digest, len(data))
    assert not blob.exists()  # a blob that does not match its name leaves the cache
    assert not cache.incomplete_path(digest).exists()  # linked elsewhere, so not reused as a partial
    assert (tmp_path / "snapshot-file").read_bytes()[:3] == b"bad"  # the other link is left alone
    assert cache.locate([b"\x01" * 32]) == {}
    assert cache._db().execute("SELECT COUNT(*) FROM chunks").fetchone() == (0,)
    cache.close()
