"""Xet's hashes and binary formats (huggingface.co/docs/xet), as the node needs them server side.

Chunk hashes are BLAKE3 keyed with ``DATA_KEY``; a xorb's hash is the Merkle root of its chunks; a
file's hash is the Merkle root of its chunks keyed once more with the zero key. Hashes travel as
text in Xet's own order (four little-endian u64, each printed as 16 hex digits).

Xorb: chunks, each an 8-byte header (version 0, compressed size u24, scheme, raw size u24) and its
bytes (none, LZ4 frame, or LZ4 of the bytes regrouped by position mod 4). Shard (upload form): a
48-byte header, file blocks, a bookend, xorb blocks, a bookend (a footer, if any, is ignored).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import blake3
import lz4.frame
import numpy as np

from ...errors import ProtocolError

DATA_KEY = bytes.fromhex("6697f5775b9550de3135cbaca597181c9de421109beb2b58b4d0b04b93adf229")
INTERNAL_NODE_KEY = bytes.fromhex("017ec5c7a5472996fd946666b48a02e65ddd536f37c76dd2f86352e64a53713f")
ZERO_KEY = bytes(32)
SHARD_TAG = bytes.fromhex("48465265706f4d6574614461746100556967456a7b815783a5bdd95ccdd14aa9")
BOOKEND = b"\xff" * 32
XORB_FOOTER_IDENT = b"XETBLOB"
MAX_XORB_BYTES = 64 * 1024 * 1024
MAX_XORB_CHUNKS = 8 * 1024
MAX_CHUNK_BYTES = 128 * 1024  # Xet's maximum chunk; a little slack below for the last-chunk rule
FILE_FLAG_VERIFICATION = 1 << 31
FILE_FLAG_METADATA_EXT = 1 << 30
CHUNK_HEADER = 8
_MEAN_BRANCHING = 4
_MAX_CHILDREN = 2 * _MEAN_BRANCHING + 1


class XetFormatError(ProtocolError):
    code = "xet_format"


def to_hex(digest: bytes) -> str:
    """Xet's text form of a 32-byte hash."""
    return b"".join(digest[i : i + 8][::-1] for i in range(0, 32, 8)).hex()


def from_hex(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise XetFormatError(f"{text!r} is not a Xet hash (64 hex digits)") from exc
    if len(raw) != 32:
        raise XetFormatError(f"{text!r} is not a Xet hash (64 hex digits)")
    return b"".join(raw[i : i + 8][::-1] for i in range(0, 32, 8))


def chunk_hash(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data, key=DATA_KEY).digest()


def _cut(level: list[tuple[bytes, int]], start: int) -> int:
    left = len(level) - start
    if left <= 2:
        return left
    end = min(_MAX_CHILDREN, left)
    for i in range(2, end):  # as xet-core does (a group never closes before its third child)
        if int.from_bytes(level[start + i][0][24:32], "little") % _MEAN_BRANCHING == 0:
            return i + 1
    return end


def merkle_root(entries: Iterable[tuple[bytes, int]]) -> bytes:
    """Xet's aggregated hash tree over (hash, size) pairs; 32 zero bytes for none."""
    level = list(entries)
    if not level:
        return bytes(32)
    while len(level) > 1:
        parents: list[tuple[bytes, int]] = []
        start = 0
        while start < len(level):
            n = _cut(level, start)
            group = level[start : start + n]
            text = "".join(f"{to_hex(h)} : {size}\n" for h, size in group)
            total = sum(size for _, size in group)
            parents.append((blake3.blake3(text.encode(), key=INTERNAL_NODE_KEY).digest(), total))
            start += n
        level = parents
    return level[0][0]


def file_hash(entries: Iterable[tuple[bytes, int]]) -> bytes:
    return blake3.blake3(merkle_root(entries), key=ZERO_KEY).digest()


# -- xorbs -------------------------------------------------------------------------------------


def _ungroup4(grouped: bytes, n: int) -> bytes:
    src = np.frombuffer(grouped, dtype=np.uint8)
    out = np.empty(n, dtype=np.uint8)
    base, extra = divmod(n, 4)
    at = 0
    for i in range(4):
        size = base + (1 if i < extra else 0)
        out[i::4] = src[at : at + size]
        at += size
    return out.tobytes()


def _decode(scheme: int, payload: bytes | memoryview, raw: int) -> bytes:
    try:
        if scheme == 0:
            return bytes(payload)
        if scheme == 1:
            return lz4.frame.decompress(payload)
        if scheme == 2:
            return _ungroup4(lz4.frame.decompress(payload), raw)
    except RuntimeError as exc:  # lz4 reports a damaged frame this way
        raise XetFormatError(f"a chunk does not decompress: {exc}") from exc
    raise XetFormatError(f"unknown chunk compression scheme {scheme}")


@dataclass(frozen=True, slots=True)
class XorbChunk:
    hash: bytes  # computed here from the bytes, never read from the client
    data: bytes


def parse_xorb(body: bytes) -> list[XorbChunk]:
    """The chunks of a serialized xorb, each decompressed and hashed; a trailing footer is skipped."""
    if len(body) > MAX_XORB_BYTES + 1024 * 1024:
        raise XetFormatError(f"a xorb may be at most {MAX_XORB_BYTES} bytes, this one is {len(body)}")
    view = memoryview(body)
    chunks: list[XorbChunk] = []
    at = 0
    while at < len(body):
        if body[at : at + len(XORB_FOOTER_IDENT)] == XORB_FOOTER_IDENT:
            break  # the footer is metadata the node rebuilds from the chunks; never trusted
        if at + CHUNK_HEADER > len(body) or body[at] != 0:
            raise XetFormatError(f"bad chunk header at byte {at} of the xorb")
        stored = int.from_bytes(body[at + 1 : at + 4], "little")
        scheme = body[at + 4]
        raw = int.from_bytes(body[at + 5 : at + 8], "little")
        at += CHUNK_HEADER
        if at + stored > len(body) or raw == 0 or raw > MAX_CHUNK_BYTES * 2:
            raise XetFormatError(f"chunk {len(chunks)} of the xorb is truncated or has a bad size")
        data = _decode(scheme, view[at : at + stored], raw)
        if len(data) != raw:
            raise XetFormatError(f"chunk {len(chunks)} decompresses to {len(data)} bytes, not {raw}")
        at += stored
        chunks.append(XorbChunk(chunk_hash(data), data))
        if len(chunks) > MAX_XORB_CHUNKS:
            raise XetFormatError(f"a xorb may hold at most {MAX_XORB_CHUNKS} chunks")
    if not chunks:
        raise XetFormatError("the xorb holds no chunks")
    return chunks


def chunk_header(length: int) -> bytes:
    """The header of an uncompressed chunk, as the node serves xorb ranges."""
    size = length.to_bytes(3, "little")
    return b"\x00" + size + b"\x00" + size


# -- shards ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    xorb: bytes
    start: int
    end: int  # exclusive chunk index
    unpacked: int


@dataclass
class ShardFile:
    hash: bytes
    terms: list[Term] = field(default_factory=list)
    sha256: bytes | None = None  # the client's claim; the node computes its own


def parse_shard(body: bytes) -> list[ShardFile]:
    """The file blocks of an uploaded shard (its xorb blocks repeat what the node recorded itself)."""
    if len(body) < 48 or body[:32] != SHARD_TAG:
        raise XetFormatError("not a Xet shard (bad header tag)")
    version, footer = struct.unpack_from("<QQ", body, 32)
    if version != 2:
        raise XetFormatError(f"shard version {version} is not supported (only 2)")
    end = len(body) - footer if 0 < footer < len(body) else len(body)
    at = 48
    files: list[ShardFile] = []
    while True:
        if at + 48 > end:
            raise XetFormatError("the shard's file section is truncated")
        if body[at : at + 32] == BOOKEND:
            break
        flags, count = struct.unpack_from("<II", body, at + 32)
        entry = ShardFile(body[at : at + 32])
        at += 48
        if count == 0 or at + 48 * count > end:
            raise XetFormatError("a file block of the shard is empty or truncated")
        for _ in range(count):
            _, unpacked, start, stop = struct.unpack_from("<IIII", body, at + 32)
            if stop <= start:
                raise XetFormatError("a file term has an empty chunk range")
            entry.terms.append(Term(body[at : at + 32], start, stop, unpacked))
            at += 48
        if flags & FILE_FLAG_VERIFICATION:
            at += 48 * count
        if flags & FILE_FLAG_METADATA_EXT:
            entry.sha256 = body[at : at + 32]
            at += 48
        if at > end:
            raise XetFormatError("a file block of the shard is truncated")
        files.append(entry)
        if len(files) > 100_000:
            raise XetFormatError("too many files in one shard")
    return files
