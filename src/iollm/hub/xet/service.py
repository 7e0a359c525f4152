"""The node's Xet content-addressed store: xorbs in, files recorded, reconstructions and xorb ranges out.

Where the bytes live. A verified xorb is kept as a staging file (its chunks' raw bytes, in order)
until a shard names a file built from it. The node then assembles that file, computes its SHA-256,
and stores it with its own chunker in the node's chunk store (``Hub.ingest``), exactly as an LFS
upload would be: native pull, LFS, resolve and Xet all read the same stored file, and a native push
of the same file finds every chunk already there. Each Xet chunk then points at (file SHA-256,
offset), so serving a xorb range reads the stored file; the staging file goes once all its chunks
have such a place. Nothing is kept twice.

Trust. Every chunk hash, xorb hash and file hash is computed here from bytes (a mismatch is
refused); a shard's SHA-256 claim is checked against the node's own. A shard may reference only
xorbs the uploader sent or whose files the uploader can read; anything else reads as absent. The
global dedup query answers by the same rule: a shard listing only xorbs the caller may reference.
"""

from __future__ import annotations

import bisect
import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from sqlalchemy import func, select

from ...database import insert_ignore, utc_now_iso
from ...errors import IntegrityError, NotFound
from ...store import MappedFile
from ...store.reader import ChunkedFile
from ..accounts import Identity
from ..content_trust import unpack_chunks
from ..repos import Hub
from ..tables import contents, repo_chunks
from .format import Term, chunk_header, file_hash, from_hex, merkle_root, parse_shard, parse_xorb, to_hex
from .shard_writer import CasBlock, dedup_eligible, write_dedup_shard
from .tables import dedup_chunks, files, xorb_files, xorb_uploads, xorbs

_UNPLACED = bytes(40)
_SQL_BATCH = 900
DEDUP_XORBS = 16  # xorbs in one global dedup answer: those holding the chunk, then the ones after them
DEDUP_SHARD_SECONDS = 24 * 3600  # how long a client may dedup against an answer (access can change)


@dataclass
class XorbRecord:
    hash: str
    hashes: list[bytes]
    lengths: list[int]
    places: list[tuple[str, int] | None]

    @property
    def raw_starts(self) -> list[int]:
        return [0, *accumulate(self.lengths)]

    @property
    def served_starts(self) -> list[int]:
        """Offsets of each chunk in the xorb as the node serves it (uncompressed, 8-byte headers)."""
        return [0, *accumulate(n + 8 for n in self.lengths)]


@dataclass
class XetFile:
    hash: str
    sha256: str
    size: int
    terms: list[Term]


def _pack_terms(terms: list[Term]) -> bytes:
    return b"".join(t.xorb + struct.pack("<III", t.start, t.end, t.unpacked) for t in terms)


def _unpack_terms(raw: bytes) -> list[Term]:
    out = []
    for i in range(0, len(raw), 44):
        start, end, unpacked = struct.unpack_from("<III", raw, i + 32)
        out.append(Term(raw[i : i + 32], start, end, unpacked))
    return out


class XetStore:
    """Xet's CAS on top of the hub: see the module docstring."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.db = hub.db
        self.staging = hub.store.root / "xet-staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # What clients sent, for benchmarks and tests (bytes on the wire, after Xet's compression).
        self.counters = {
            "xorbs": 0,
            "xorb_bytes": 0,
            "xorbs_new": 0,
            "chunk_bytes_new": 0,
            "shards": 0,
            "served_bytes": 0,
            "dedup_queries": 0,  # global dedup queries (GET /v1/chunks/...)
            "dedup_answers": 0,  # of those, answered with a shard
        }
        self._index_earlier_xorbs()

    def _index_earlier_xorbs(self) -> None:
        """Fill the global dedup index once for xorbs and files stored before it existed."""
        with self.db.read() as conn:
            if conn.execute(select(dedup_chunks.c.chunk).limit(1)).first() is not None:
                return
            if conn.execute(select(xorbs.c.hash).limit(1)).first() is None:
                return
            rows = []
            for row in conn.execute(select(xorbs.c.hash, xorbs.c.chunks)):
                raw = bytes(row.chunks)
                hashes = {raw[i : i + 32] for i in range(0, len(raw), 36)}
                rows += [{"chunk": to_hex(h), "xorb": row.hash} for h in hashes if dedup_eligible(h)]
            firsts = [_unpack_terms(bytes(row.terms))[0] for row in conn.execute(select(files.c.terms))]
        for first in firsts:
            record = self.xorb(to_hex(first.xorb))
            if record is not None:
                rows.append({"chunk": to_hex(record.hashes[first.start]), "xorb": record.hash})
        rows = [dict(pair) for pair in {tuple(r.items()) for r in rows}]
        with self.db.write() as conn:
            for start in range(0, len(rows), _SQL_BATCH):
                insert_ignore(conn, dedup_chunks, rows[start : start + _SQL_BATCH])

    # -- xorbs -----------------------------------------------------------------------------------

    def put_xorb(self, who: Identity, claimed: str, body: bytes) -> bool:
        """Verify and keep a xorb; returns whether it was new. Its hash must be its chunks' Merkle root."""
        chunks = parse_xorb(body)
        actual = to_hex(merkle_root((c.hash, len(c.data)) for c in chunks))
        if actual != claimed.lower():
            raise IntegrityError(f"the xorb's chunks hash to {actual}, not {claimed}: refused")
        with self._lock:
            self.counters["xorbs"] += 1
            self.counters["xorb_bytes"] += len(body)
        user = who.require_user()
        if self.xorb(actual) is None:
            path = self.staging / f"{actual}.xorb"
            with tempfile.NamedTemporaryFile(dir=self.staging, delete=False) as handle:
                for c in chunks:
                    handle.write(c.data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, path)
            record = b"".join(c.hash + struct.pack("<I", len(c.data)) for c in chunks)
            row = {
                "hash": actual,
                "chunks": record,
                "places": _UNPLACED * len(chunks),
                "created_at": utc_now_iso(),
            }
            eligible = {to_hex(c.hash) for c in chunks if dedup_eligible(c.hash)}
            with self.db.write() as conn:
                insert_ignore(conn, xorbs, [row])
                insert_ignore(conn, dedup_chunks, [{"chunk": c, "xorb": actual} for c in sorted(eligible)])
            with self._lock:
                self.counters["xorbs_new"] += 1
                self.counters["chunk_bytes_new"] += sum(len(c.data) for c in chunks)
            new = True
        else:
            new = False
        with self.db.write() as conn:
            insert_ignore(conn, xorb_uploads, [{"user_name": user, "xorb": actual}])
        return new

    def xorb(self, hash_hex: str) -> XorbRecord | None:
        with self.db.read() as conn:
            row = conn.execute(select(xorbs.c.chunks, xorbs.c.places).where(xorbs.c.hash == hash_hex)).first()
        if row is None:
            return None
        raw, places = bytes(row.chunks), bytes(row.places)
        hashes = [raw[i : i + 32] for i in range(0, len(raw), 36)]
        lengths = [struct.unpack_from("<I", raw, i + 32)[0] for i in range(0, len(raw), 36)]
        where: list[tuple[str, int] | None] = []
        for i in range(0, len(places), 40):
            item = places[i : i + 40]
            where.append(
                None if item == _UNPLACED else (item[:32].hex(), struct.unpack_from("<Q", item, 32)[0])
            )
        return XorbRecord(hash_hex, hashes, lengths, where)

    def may_use_xorb(self, who: Identity, hash_hex: str) -> bool:
        """The caller sent this xorb, or can read a file recorded from it."""
        with self.db.read() as conn:
            if (
                who.name
                and conn.execute(
                    select(xorb_uploads.c.xorb).where(
                        (xorb_uploads.c.user_name == who.name) & (xorb_uploads.c.xorb == hash_hex)
                    )
                ).first()
            ):
                return True
            shas = [
                r[0] for r in conn.execute(select(xorb_files.c.sha256).where(xorb_files.c.xorb == hash_hex))
            ]
        return any(self.hub.content_for(who, sha) is not None for sha in shas)

    def read_chunks(self, record: XorbRecord, start: int, end: int) -> Iterator[bytes]:
        """Raw bytes of chunks [start, end) of a xorb, from the stored files or the staging file."""
        i = start
        while i < end:
            place = record.places[i]
            j = i + 1
            if place is None:
                while j < end and record.places[j] is None:
                    j += 1
                starts = record.raw_starts
                with open(self.staging / f"{record.hash}.xorb", "rb") as handle:
                    handle.seek(starts[i])
                    data = handle.read(starts[j] - starts[i])
            else:
                sha, offset = place
                expected = offset + record.lengths[i]
                while j < end and record.places[j] == (sha, expected):
                    expected += record.lengths[j]
                    j += 1
                data = self._content(sha).read(offset, expected - offset)
            at = 0
            for k in range(i, j):
                yield data[at : at + record.lengths[k]]
                at += record.lengths[k]
            i = j

    def _content(self, sha256: str) -> ChunkedFile:
        with self.db.read() as conn:
            row = conn.execute(select(contents.c.chunks).where(contents.c.sha256 == sha256)).first()
        if row is None:
            raise NotFound(f"stored file {sha256} is gone")
        return ChunkedFile(self.hub.store, [(bytes.fromhex(d), n) for d, n in unpack_chunks(row.chunks)])

    def serve_range(self, record: XorbRecord, first: int, last: int) -> Iterator[bytes]:
        """Chunks [first, last) as served xorb bytes: uncompressed chunks with their headers."""
        batch: list[bytes] = []
        size = 0
        for data in self.read_chunks(record, first, last):
            batch.append(chunk_header(len(data)))
            batch.append(data)
            size += len(data)
            with self._lock:
                self.counters["served_bytes"] += len(data) + 8
            if size >= 4 << 20:
                yield b"".join(batch)
                batch, size = [], 0
        if batch:
            yield b"".join(batch)

    # -- shards ----------------------------------------------------------------------------------

    def put_shard(self, who: Identity, body: bytes, tmp_dir: Path) -> int:
        """Record each file of an uploaded shard; returns how many were new to the node."""
        who.require_user()
        recorded = 0
        for item in parse_shard(body):
            recorded += self._record_file(who, item.hash, item.terms, item.sha256, tmp_dir)
        with self._lock:
            self.counters["shards"] += 1
            self.counters["xorb_bytes"] += len(body)
        return recorded

    def _record_file(
        self, who: Identity, hash_raw: bytes, terms: list[Term], claimed_sha: bytes | None, tmp_dir: Path
    ) -> int:
        records: dict[str, XorbRecord] = {}
        entries: list[tuple[bytes, int]] = []
        for term in terms:
            key = to_hex(term.xorb)
            if key not in records:
                record = self.xorb(key)
                if record is None or not self.may_use_xorb(who, key):
                    raise IntegrityError(
                        f"the shard references xorb {key}, which was never uploaded (or is not yours to "
                        "reference): upload it first"
                    )
                records[key] = record
            record = records[key]
            if term.end > len(record.lengths) or sum(record.lengths[term.start : term.end]) != term.unpacked:
                raise IntegrityError(
                    f"a term names chunks {term.start}-{term.end} of xorb {key}, which it lacks"
                )
            entries.extend(
                zip(record.hashes[term.start : term.end], record.lengths[term.start : term.end], strict=True)
            )
        actual = file_hash(entries)
        name = to_hex(hash_raw)
        if actual != hash_raw:
            raise IntegrityError(f"the file's chunks hash to {to_hex(actual)}, not {name}: refused")
        existing = self.file(name)
        if existing is not None:  # known: the uploader proved they hold the bytes by naming usable xorbs
            self._grant(who, existing.sha256)
            return 0
        handle = tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False)  # noqa: SIM115 - closed below
        try:
            for term in terms:
                for data in self.read_chunks(records[to_hex(term.xorb)], term.start, term.end):
                    handle.write(data)
            handle.close()
            with MappedFile(handle.name) as mapped:
                digest = self.hub.ingest(who.name, mapped.view)
        finally:
            handle.close()
            os.unlink(handle.name)
        # the shard carries the SHA-256 as a Xet hash (four little-endian u64): compare in that form
        if claimed_sha is not None and any(claimed_sha) and to_hex(claimed_sha) != digest.sha256:
            raise IntegrityError(
                f"the file's bytes hash to sha256 {digest.sha256}, not {to_hex(claimed_sha)}"
            )
        self._place(records, terms, digest.sha256)
        with self.db.write() as conn:
            row = {
                "hash": name,
                "sha256": digest.sha256,
                "size": digest.size,
                "terms": _pack_terms(terms),
                "created_at": utc_now_iso(),
            }
            insert_ignore(conn, files, [row])
            insert_ignore(conn, xorb_files, [{"xorb": k, "sha256": digest.sha256} for k in records])
            first = terms[0]
            head = records[to_hex(first.xorb)].hashes[first.start]
            insert_ignore(conn, dedup_chunks, [{"chunk": to_hex(head), "xorb": to_hex(first.xorb)}])
        return 1

    def _grant(self, who: Identity, sha256: str) -> None:
        with self.db.read() as conn:
            row = conn.execute(select(contents.c.chunks).where(contents.c.sha256 == sha256)).first()
        if row is not None and who.name:
            self.hub.record_uploads(who.name, [bytes.fromhex(d) for d, _ in unpack_chunks(row.chunks)])

    def _place(self, records: dict[str, XorbRecord], terms: list[Term], sha256: str) -> None:
        """Point each still-staged chunk of these xorbs at its offset in the stored file."""
        offset = 0
        changed: set[str] = set()
        for term in terms:
            record = records[to_hex(term.xorb)]
            for i in range(term.start, term.end):
                if record.places[i] is None:
                    record.places[i] = (sha256, offset)
                    changed.add(record.hash)
                offset += record.lengths[i]
        with self._lock:
            updates = {}
            for key in changed:
                current = self.xorb(key)
                assert current is not None
                merged = [old or new for old, new in zip(current.places, records[key].places, strict=True)]
                records[key].places = merged
                updates[key] = b"".join(
                    _UNPLACED if p is None else bytes.fromhex(p[0]) + struct.pack("<Q", p[1]) for p in merged
                )
            with self.db.write() as conn:
                for key, packed in updates.items():
                    conn.execute(xorbs.update().where(xorbs.c.hash == key).values(places=packed))
        for key in changed:
            if all(p is not None for p in records[key].places):
                (self.staging / f"{key}.xorb").unlink(missing_ok=True)

    # -- global dedup ------------------------------------------------------------------------------

    def dedup_shard(self, who: Identity, chunk_hex: str) -> bytes | None:
        """The answer to ``GET /v1/chunks/{prefix}/{chunk}``: a shard (chunk hashes keyed with a fresh
        HMAC key) listing the xorbs that hold this chunk and that the caller may reference, then the xorbs
        that follow them in files recorded with them; None when there is none."""
        with self.db.read() as conn:
            holders = [
                r[0]
                for r in conn.execute(
                    select(dedup_chunks.c.xorb).where(dedup_chunks.c.chunk == chunk_hex).limit(256)
                )
            ]
        with self._lock:
            self.counters["dedup_queries"] += 1
        chosen: list[str] = []
        for key in sorted(holders):
            if len(chosen) < DEDUP_XORBS and self.may_use_xorb(who, key):
                chosen.append(key)
        if not chosen:
            return None
        for key in self._following(chosen):
            if len(chosen) >= DEDUP_XORBS:
                break
            if key not in chosen and self.may_use_xorb(who, key):
                chosen.append(key)
        blocks = []
        for key in chosen:
            record = self.xorb(key)
            if record is not None:
                pairs = list(zip(record.hashes, record.lengths, strict=True))
                blocks.append(CasBlock(from_hex(key), pairs, record.served_starts[-1]))
        if not blocks:
            return None
        now = int(time.time())
        with self._lock:
            self.counters["dedup_answers"] += 1
        return write_dedup_shard(blocks, os.urandom(32), now, now + DEDUP_SHARD_SECONDS)

    def _following(self, chosen: list[str]) -> Iterator[str]:
        """Xorbs after these in the files recorded with them, nearest first (a client uploading a new
        version of a file reads on from where the queried chunk was)."""
        with self.db.read() as conn:
            shas = [
                r[0]
                for r in conn.execute(
                    select(xorb_files.c.sha256).where(xorb_files.c.xorb.in_(chosen)).distinct().limit(8)
                )
            ]
            rows = conn.execute(select(files.c.terms).where(files.c.sha256.in_(shas))).all() if shas else []
        for row in rows:
            order = list(dict.fromkeys(to_hex(t.xorb) for t in _unpack_terms(bytes(row.terms))))
            start = min((order.index(k) for k in chosen if k in order), default=0)
            yield from order[start + 1 :]

    # -- files -----------------------------------------------------------------------------------

    def file(self, hash_hex: str) -> XetFile | None:
        with self.db.read() as conn:
            row = conn.execute(select(files).where(files.c.hash == hash_hex)).first()
        if row is None:
            return None
        return XetFile(row.hash, row.sha256, row.size, _unpack_terms(bytes(row.terms)))

    def hash_for_sha256(self, sha256: str) -> str | None:
        """The Xet hash of a stored file, if it came in through Xet."""
        with self.db.read() as conn:
            row = conn.execute(select(files.c.hash).where(files.c.sha256 == sha256).limit(1)).first()
        return row[0] if row else None

    def repo_holds(self, repo_pk: int, sha256: str) -> bool:
        """Some commit of this repository holds the stored file with this SHA-256."""
        with self.db.read() as conn:
            row = conn.execute(select(contents.c.chunks).where(contents.c.sha256 == sha256)).first()
            if row is None:
                return False
            digests = list({bytes.fromhex(d) for d, _ in unpack_chunks(row.chunks)})
            found = 0
            for start in range(0, len(digests), _SQL_BATCH):
                batch = digests[start : start + _SQL_BATCH]
                found += conn.execute(
                    select(func.count())
                    .select_from(repo_chunks)
                    .where((repo_chunks.c.repo_id == repo_pk) & repo_chunks.c.digest.in_(batch))
                ).scalar_one()
        return found == len(digests)

    def reconstruction(self, item: XetFile, span: tuple[int, int] | None, fetch_url) -> dict:
        """V1 reconstruction of bytes [start, end) of a file: whole terms and where to fetch them."""
        start, end = span if span else (0, item.size)
        starts = [0, *accumulate(t.unpacked for t in item.terms)]
        first = bisect.bisect_right(starts, start) - 1
        last = bisect.bisect_left(starts, end) - 1
        chosen = item.terms[first : last + 1]
        terms, fetch = [], {}
        records: dict[str, XorbRecord] = {}
        for term in chosen:
            key = to_hex(term.xorb)
            if key not in records:
                record = self.xorb(key)
                if record is None:
                    raise NotFound(f"xorb {key} of file {item.hash} is missing on this node")
                records[key] = record
            served = records[key].served_starts
            terms.append(
                {
                    "hash": key,
                    "unpacked_length": term.unpacked,
                    "range": {"start": term.start, "end": term.end},
                }
            )
            fetch.setdefault(key, []).append(
                {
                    "range": {"start": term.start, "end": term.end},
                    "url": fetch_url(key),
                    "url_range": {"start": served[term.start], "end": served[term.end] - 1},
                }
            )
        return {"offset_into_first_range": start - starts[first], "terms": terms, "fetch_info": fetch}


__all__ = ["XetFile", "XetStore", "XorbRecord", "from_hex"]
