"""Shards the node writes: the answer to a global dedup query (huggingface.co/docs/xet/shard).

Layout, as xet-core's ``MDBShardInfo::serialize_from`` writes it: a 48-byte header (tag, version 2,
footer size 200); an empty file section (just its bookend); the CAS section, one block per xorb in
hash order (a 48-byte header: hash, flags, chunk count, raw bytes, stored bytes; then per chunk its
hash, byte offset in the xorb's raw data, length, flags); its bookend; the file lookup table (empty),
the xorb lookup table (u64 first word of each xorb hash, u32 index of its block in 48-byte entries)
and the chunk lookup table (u64 first word of each chunk hash, u32 block index, u32 chunk index,
sorted on the u64); and the 200-byte footer with every offset, the HMAC key and the expiry.

Chunk hashes never appear raw: each is ``blake3(chunk_hash, key=chunk_hash_hmac_key)`` (xet-core's
``MerkleHash::hmac``) with a fresh random key per answer. A client that holds a chunk keys its own hash
to find it; the answer tells nobody else which chunks a xorb holds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

from .format import BOOKEND, SHARD_TAG, XetFormatError

HEADER_VERSION = 2
FOOTER_VERSION = 1
FOOTER_SIZE = 200
ENTRY = 48
GLOBAL_DEDUP_MODULUS = 1024  # xet-core's MDB_SHARD_GLOBAL_DEDUP_CHUNK_MODULUS


def dedup_eligible(chunk: bytes) -> bool:
    """Whether hf_xet asks the global dedup API about this chunk (besides a file's first chunk): the
    hash's last 8 bytes, as a little-endian u64, are a multiple of 1024."""
    return int.from_bytes(chunk[24:32], "little") % GLOBAL_DEDUP_MODULUS == 0


def keyed(chunk: bytes, key: bytes) -> bytes:
    """A chunk hash as a dedup answer lists it (xet-core's ``MerkleHash::hmac``)."""
    return blake3.blake3(chunk, key=key).digest()


def _words(digest: bytes) -> tuple[int, ...]:
    return struct.unpack("<4Q", digest)  # xet-core orders and truncates hashes as four u64


@dataclass(frozen=True, slots=True)
class CasBlock:
    hash: bytes  # the xorb's hash, raw 32 bytes
    chunks: list[tuple[bytes, int]]  # (raw chunk hash, length) in xorb order
    stored_bytes: int  # the xorb's size as stored or served


def write_dedup_shard(blocks: list[CasBlock], key: bytes, created: int, expiry: int) -> bytes:
    """A complete shard (footer and lookup tables) listing these xorbs, chunk hashes keyed with ``key``."""
    if len(key) != 32:
        raise ValueError("the HMAC key is 32 bytes")
    out = bytearray(SHARD_TAG + struct.pack("<QQ", HEADER_VERSION, FOOTER_SIZE))
    file_info_offset = len(out)
    out += BOOKEND + bytes(16)
    cas_info_offset = len(out)
    cas_lookup: list[tuple[int, int]] = []
    chunk_lookup: list[tuple[int, int, int]] = []
    stored = raw_total = 0
    index = 0
    for block in sorted({b.hash: b for b in blocks}.values(), key=lambda b: _words(b.hash)):
        raw = sum(n for _, n in block.chunks)
        out += block.hash + struct.pack("<IIII", 0, len(block.chunks), raw, block.stored_bytes)
        cas_lookup.append((_words(block.hash)[0], index))
        start = 0
        for i, (digest, length) in enumerate(block.chunks):
            hidden = keyed(digest, key)
            out += hidden + struct.pack("<IIII", start, length, 0, 0)
            chunk_lookup.append((_words(hidden)[0], index, i))
            start += length
        index += 1 + len(block.chunks)
        stored += block.stored_bytes
        raw_total += raw
    out += BOOKEND + bytes(16)
    file_lookup_offset = len(out)  # no files
    cas_lookup_offset = len(out)
    for word, at in cas_lookup:
        out += struct.pack("<QI", word, at)
    chunk_lookup_offset = len(out)
    chunk_lookup.sort(key=lambda item: item[0])
    for word, at, i in chunk_lookup:
        out += struct.pack("<QII", word, at, i)
    footer_offset = len(out)
    out += struct.pack(
        "<9Q",
        FOOTER_VERSION,
        file_info_offset,
        cas_info_offset,
        file_lookup_offset,
        0,
        cas_lookup_offset,
        len(cas_lookup),
        chunk_lookup_offset,
        len(chunk_lookup),
    )
    out += key + struct.pack("<QQ", created, expiry) + bytes(48)
    out += struct.pack("<4Q", stored, 0, raw_total, footer_offset)  # on disk, materialized, stored
    assert len(out) == footer_offset + FOOTER_SIZE
    return bytes(out)


@dataclass(frozen=True, slots=True)
class DedupShard:
    key: bytes
    created: int
    expiry: int
    xorbs: dict[bytes, list[tuple[bytes, int, int]]]  # xorb hash -> (keyed chunk hash, start, length)


def read_dedup_shard(body: bytes) -> DedupShard:
    """The footer and CAS section of a shard (the reader tests use on the node's answers)."""
    if len(body) < 48 + FOOTER_SIZE or body[:32] != SHARD_TAG:
        raise XetFormatError("not a Xet shard (bad header tag)")
    version, footer_size = struct.unpack_from("<QQ", body, 32)
    if version != HEADER_VERSION or footer_size != FOOTER_SIZE:
        raise XetFormatError("not a version 2 shard with a 200-byte footer")
    footer = len(body) - FOOTER_SIZE
    words = struct.unpack_from("<9Q", body, footer)
    if words[0] != FOOTER_VERSION or struct.unpack_from("<Q", body, len(body) - 8)[0] != footer:
        raise XetFormatError("bad shard footer")
    key = body[footer + 72 : footer + 104]
    created, expiry = struct.unpack_from("<QQ", body, footer + 104)
    at = words[2]
    xorbs: dict[bytes, list[tuple[bytes, int, int]]] = {}
    while body[at : at + 32] != BOOKEND:
        count = struct.unpack_from("<I", body, at + 36)[0]
        entries = []
        for i in range(count):
            base = at + ENTRY * (i + 1)
            start, length = struct.unpack_from("<II", body, base + 32)
            entries.append((body[base : base + 32], start, length))
        xorbs[body[at : at + 32]] = entries
        at += ENTRY * (count + 1)
        if at + 32 > footer:
            raise XetFormatError("the shard's CAS section is truncated")
    return DedupShard(key, created, expiry, xorbs)


__all__ = ["CasBlock", "DedupShard", "dedup_eligible", "keyed", "read_dedup_shard", "write_dedup_shard"]
