"""The chunk store: content-defined chunks, dedup, packs, crash recovery, damage detection."""

from __future__ import annotations

import os
import random

import pytest

from iollm.store import ChunkCorrupt, ChunkMissing, ChunkStore, chunk_id, digest_buffer
from iollm.store.reader import ChunkedFile


def noise(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_chunking_is_content_defined() -> None:
    data = noise(8 << 20)
    edited = data[: 4 << 20] + b"an insertion in the middle" + data[4 << 20 :]
    before = {c.digest for c in digest_buffer(data).chunks}
    after = [c.digest for c in digest_buffer(edited).chunks]
    changed = [d for d in after if d not in before]
    assert len(after) > 50
    assert len(changed) <= 3  # only the chunks around the edit are new
    assert digest_buffer(data).chunks == digest_buffer(data).chunks  # deterministic


def test_digest_has_sha256_and_chunk_sizes(tmp_path) -> None:
    import hashlib

    data = noise(3 << 20, 1)
    digest = digest_buffer(data)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(c.length for c in digest.chunks) == len(data)
    assert all(16 * 1024 <= c.length <= 256 * 1024 for c in digest.chunks[:-1])
    assert digest_buffer(b"").chunks == [] and digest_buffer(b"").size == 0


def test_ingest_dedups_and_reads_back(tmp_path) -> None:
    store = ChunkStore(tmp_path / "s")
    data = noise(5 << 20, 2)
    (tmp_path / "f").write_bytes(data)
    first, new_first = store.ingest_file(tmp_path / "f")
    _second, new_second = store.ingest_file(tmp_path / "f")
    assert new_first == len(data) and new_second == 0
    reader = ChunkedFile(store, first.chunk_list())
    assert b"".join(reader.iter_range()) == data
    assert reader.read(123_456, 1_000_000) == data[123_456:1_123_456]
    assert reader.read(len(data) - 10, 100) == data[-10:]
    assert store.stats()["chunks"] == len(first.chunks)


def test_compressible_chunks_are_stored_compressed(tmp_path) -> None:
    store = ChunkStore(tmp_path / "s")
    data = b"".join(b"weights %08d " % i for i in range(400_000))
    digest, _ = store.ingest_bytes(data)
    stats = store.stats()
    assert stats["stored_bytes"] < stats["raw_bytes"] * 0.5
    assert b"".join(ChunkedFile(store, digest.chunk_list()).iter_range()) == data


def test_put_rejects_bytes_that_do_not_match_their_name(tmp_path) -> None:
    store = ChunkStore(tmp_path / "s")
    with pytest.raises(ChunkCorrupt):
        store.put_many([(chunk_id(b"honest"), b"forged")])
    assert store.stats()["chunks"] == 0


def test_missing_chunk_is_a_clear_error(tmp_path) -> None:
    store = ChunkStore(tmp_path / "s")
    with pytest.raises(ChunkMissing):
        store.read(chunk_id(b"never stored"))
    assert store.missing([chunk_id(b"x"), chunk_id(b"x")]) == [chunk_id(b"x")]


def test_interrupted_write_is_truncated_on_open(tmp_path) -> None:
    store = ChunkStore(tmp_path / "s")
    digest, _ = store.ingest_bytes(noise(1 << 20, 3))
    pack = store.pack_path(1)
    committed = pack.stat().st_size
    with open(pack, "ab") as handle:  # bytes of a writer killed before its index commit
        handle.write(b"garbage from a killed writer")
    store.close()
    reopened = ChunkStore(tmp_path / "s")
    assert pack.stat().st_size == committed
    assert reopened.verify().ok
    assert ChunkedFile(reopened, digest.chunk_list()).read(0, 10) == noise(1 << 20, 3)[:10]


def test_verify_names_the_damaged_pack_and_chunk(tmp_path) -> None:
    store = ChunkStore(tmp_path / "s")
    digest, _ = store.ingest_bytes(noise(2 << 20, 4))
    pack = store.pack_path(1)
    raw = bytearray(pack.read_bytes())
    raw[700_000] ^= 0xFF
    pack.write_bytes(bytes(raw))
    report = store.verify()
    assert not report.ok
    assert report.damaged_packs == [pack.name]
    assert len(report.damaged_chunks) == 1
    with pytest.raises(ChunkCorrupt):
        b"".join(ChunkedFile(store, digest.chunk_list()).iter_range())


def test_truncated_pack_is_reported(tmp_path) -> None:
    store = ChunkStore(tmp_path / "s")
    store.ingest_bytes(noise(1 << 20, 5))
    os.truncate(store.pack_path(1), 1000)
    report = store.verify()
    assert report.damaged_packs == [store.pack_path(1).name]
    assert report.damaged_chunks


def test_a_batch_larger_than_a_pack_spans_packs_intact(tmp_path, monkeypatch) -> None:
    from iollm.store import chunkstore

    monkeypatch.setattr(chunkstore, "PACK_MAX", 1 << 20)
    store = ChunkStore(tmp_path / "s")
    data = noise(5 << 20, 6)
    digest, _ = store.ingest_bytes(data)  # one writer batch crossing four pack boundaries
    assert store.stats()["packs"] >= 5
    assert store.verify().ok
    assert b"".join(ChunkedFile(store, digest.chunk_list()).iter_range()) == data
