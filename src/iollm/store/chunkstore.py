"""A content-addressed chunk store: append-only pack files plus a SQLite index.

Why packs: a 10 GB model is ~150k chunks; one file per chunk would cost 150k inodes and as many
opens. Packs of up to 64 MiB keep chunks that were written together next to each other, so a pull
reads them back with a handful of large sequential reads.

Crash safety: chunk bytes are appended (and fsynced) before their index rows and the pack's
committed length are written in one SQLite transaction. A process killed mid-write leaves bytes past
the committed length, which the next open truncates away: nothing half-written is ever indexed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from . import codec
from .chunking import FileDigest, MappedFile, chunk_id, digest_buffer
from .errors import ChunkCorrupt, ChunkMissing
from .sqlite import SqlitePerThread

PACK_MAX = 64 * 1024 * 1024
SPAN_MAX = 8 * 1024 * 1024  # largest single read when serving consecutive chunks
HASH_BLOCK = 4 * 1024 * 1024  # SHA-256 of a stored file is computed on blocks this large
_SQL_BATCH = 900
_INGESTED_KEEP = 256

# Files this context (one request handler, one job) chunked and stored itself, newest last. The hub
# treats them as content the committer holds and whose SHA-256 the node computed: in-process code
# (publishing a path, writing an Envfile, batch outputs) commits what it just ingested without a
# second hashing pass or an upload record. A context variable, so nothing leaks between requests:
# each request and each thread-pool call runs in its own copy.
_ingested: ContextVar[tuple[FileDigest, ...]] = ContextVar("iollm_ingested", default=())


def ingested_here() -> tuple[FileDigest, ...]:
    """The files ingested in this context since it last committed (at most the last 256)."""
    return _ingested.get()


def forget_ingested() -> None:
    _ingested.set(())


_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    digest BLOB PRIMARY KEY,
    pack INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    raw INTEGER NOT NULL,
    codec INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_place ON chunks(pack, offset);
CREATE TABLE IF NOT EXISTS packs (
    id INTEGER PRIMARY KEY,
    committed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS damaged (
    digest BLOB PRIMARY KEY,
    reason TEXT NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class _Row:
    digest: bytes
    pack: int
    offset: int
    stored: int
    raw: int
    codec: int


@dataclass
class VerifyReport:
    """What ``store verify`` found; ``ok`` only when nothing is damaged."""

    chunks: int = 0
    bytes: int = 0
    packs: int = 0
    damaged_chunks: list[dict[str, str | int]] = field(default_factory=list)
    damaged_packs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged_chunks and not self.damaged_packs

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "chunks": self.chunks,
            "bytes": self.bytes,
            "packs": self.packs,
            "damaged_packs": self.damaged_packs,
            "damaged_chunks": self.damaged_chunks,
        }


class ChunkWriter:
    """Stores chunks in batches on a background thread; rows become visible only on ``commit``.

    The caller (chunking and hashing) and the writer (index lookups, compression, pack writes and
    their fsync) run concurrently; each batch costs one index query and a few gathered writes.
    Chunk bytes must stay valid until ``commit`` returns (they are usually views of a mapped file).
    """

    BATCH_BYTES = 8 * 1024 * 1024

    def __init__(self, store: ChunkStore) -> None:
        self._store = store
        self._rows: list[tuple[bytes, int, int, int, int, int]] = []
        self._seen: set[bytes] = set()
        self._encoder = codec.AdaptiveEncoder()
        self._batch: list[tuple[bytes, bytes | memoryview]] = []
        self._batch_bytes = 0
        self._queue: queue.Queue[list[tuple[bytes, bytes | memoryview]] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chunk-writer", daemon=True)
        self._thread.start()
        self.new_chunks = 0
        self.new_bytes = 0

    def add(self, digest: bytes, data: bytes | memoryview) -> None:
        """Queue one chunk; it is stored unless the store (or this batch) already has it."""
        self._batch.append((digest, data))
        self._batch_bytes += len(data)
        if self._batch_bytes >= self.BATCH_BYTES:
            self._submit()

    def _submit(self) -> None:
        if self._error is not None:
            raise self._error
        if self._batch:
            self._queue.put(self._batch)
        self._batch, self._batch_bytes = [], 0

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                self._write(batch)
            except BaseException as exc:  # surfaced to the caller on its next add/commit
                self._error = exc

    def _write(self, batch: list[tuple[bytes, bytes | memoryview]]) -> None:
        fresh = [(d, data) for d, data in batch if d not in self._seen]
        missing = set(self._store.missing([d for d, _ in fresh]))
        todo = []
        for digest, data in fresh:
            if digest in missing and digest not in self._seen:
                self._seen.add(digest)
                kind, payload = self._encoder.encode(data)
                todo.append((digest, kind, payload, len(data)))
        places = self._store._append_many([payload for _, _, payload, _ in todo])
        for (digest, kind, payload, raw), (pack, offset) in zip(todo, places, strict=True):
            self._rows.append((digest, pack, offset, len(payload), raw, kind))
            self.new_chunks += 1
            self.new_bytes += raw

    def _finish(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def commit(self) -> None:
        try:
            self._submit()
        finally:
            self._finish()
        if self._error is not None:
            raise self._error
        self._store._commit_rows(self._rows)
        self._rows = []

    def abandon(self) -> None:
        self._batch = []
        self._finish()


class ChunkStore:
    """Chunks by BLAKE3 digest, stored once however many files and repositories share them."""

    def __init__(self, root: str | os.PathLike[str], durable: bool = True) -> None:
        self.root = Path(root)
        self.packs_dir = self.root / "packs"
        self.packs_dir.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self._db = SqlitePerThread(self.root / "index.sqlite")
        self._write_lock = threading.Lock()
        self._read_fds: dict[int, int] = {}
        self._fd_lock = threading.Lock()
        self._lock_file = open(self.root / "write.lock", "a+b")  # noqa: SIM115 - held for life
        with self._db() as db:
            db.executescript(_SCHEMA)
        self._active: tuple[int, int, int] | None = None  # (pack id, fd, end offset)
        self._recover()

    # -- plumbing -------------------------------------------------------------------------------

    def pack_path(self, pack: int) -> Path:
        return self.packs_dir / f"pack-{pack:06d}.pack"

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)

    def _recover(self) -> None:
        """Cut every pack back to its committed length (drops bytes of interrupted writes)."""
        with self._write_lock, self._process_lock():
            for pack, committed in self._db().execute("SELECT id, committed FROM packs"):
                path = self.pack_path(pack)
                if path.exists() and path.stat().st_size > committed:
                    os.truncate(path, committed)

    def _append_many(self, payloads: list[bytes | memoryview]) -> list[tuple[int, int]]:
        """Append payloads to the active pack with gathered writes, rolling to a new pack when full.
        Returns (pack, offset) for each. Caller holds the write lock."""
        places: list[tuple[int, int]] = []
        group: list[bytes | memoryview] = []
        for payload in payloads:
            if self._active is None or self._active[2] + len(payload) > PACK_MAX:
                self._write_group(group)
                group = []
                self._roll_pack()
            assert self._active is not None
            pack, fd, end = self._active
            places.append((pack, end))
            group.append(payload)
            self._active = (pack, fd, end + len(payload))
            if len(group) >= 512:  # IOV_MAX is 1024 on Linux
                self._write_group(group)
                group = []
        self._write_group(group)
        return places

    def _write_group(self, group: list[bytes | memoryview]) -> None:
        """Write payloads that end at the active pack's current end."""
        if not group:
            return
        assert self._active is not None
        _, fd, end = self._active
        start = end - sum(len(p) for p in group)
        total = sum(len(p) for p in group)
        written = os.pwritev(fd, group, start)
        if written < total:  # short gathered write: finish byte by byte
            data = b"".join(group)
            while written < total:
                written += os.pwrite(fd, data[written:], start + written)

    def _roll_pack(self) -> None:
        db = self._db()
        row = db.execute("SELECT id, committed FROM packs ORDER BY id DESC LIMIT 1").fetchone()
        if self._active is not None:
            # The active pack is full. Its bytes of this batch are not committed yet, so the
            # database still shows room in it: never reuse it, always start the next pack.
            self._sync_active()
            os.close(self._active[1])
            row = (max(row[0], self._active[0]), PACK_MAX) if row else (self._active[0], PACK_MAX)
            self._active = None
        if row is not None and row[1] < PACK_MAX:
            pack, end = row
        else:
            pack, end = (row[0] + 1 if row else 1), 0
            db.execute("INSERT INTO packs(id, committed) VALUES (?, 0)", (pack,))
        fd = os.open(self.pack_path(pack), os.O_RDWR | os.O_CREAT, 0o644)
        self._active = (pack, fd, end)

    def _sync_active(self) -> None:
        if self._active is not None and self.durable:
            os.fsync(self._active[1])

    def _commit_rows(self, rows: list[tuple[bytes, int, int, int, int, int]]) -> None:
        if not rows:
            return
        self._sync_active()
        ends: dict[int, int] = {}
        for _, pack, offset, stored, _, _ in rows:
            ends[pack] = max(ends.get(pack, 0), offset + stored)
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            # A chunk marked damaged is replaced by the good copy just written; others are kept.
            db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET"
                " pack = excluded.pack, offset = excluded.offset, stored = excluded.stored,"
                " raw = excluded.raw, codec = excluded.codec"
                " WHERE chunks.digest IN (SELECT digest FROM damaged)",
                rows,
            )
            db.executemany("DELETE FROM damaged WHERE digest = ?", [(row[0],) for row in rows])
            for pack, end in ends.items():
                db.execute("UPDATE packs SET committed = MAX(committed, ?) WHERE id = ?", (end, pack))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def writer(self) -> Iterator[ChunkWriter]:
        """Hold the write lock for a batch of chunks; index rows are committed on exit."""
        with self._write_lock, self._process_lock():
            if self._active is not None:
                # another process may have appended since: re-read the committed end
                os.close(self._active[1])
                self._active = None
            writer = ChunkWriter(self)
            try:
                yield writer
            except BaseException:
                writer.abandon()
                raise
            else:
                writer.commit()
            finally:
                if self._active is not None:
                    os.close(self._active[1])
                    self._active = None

    # -- writing --------------------------------------------------------------------------------

    def put_many(self, chunks: Iterable[tuple[bytes, bytes | memoryview]], verify: bool = True) -> int:
        """Store (digest, data) pairs; with ``verify`` each digest is checked first. Returns new count."""
        with self.writer() as writer:
            for digest, data in chunks:
                if verify and chunk_id(data) != digest:
                    raise ChunkCorrupt(digest, "bytes do not match the chunk's BLAKE3 digest")
                writer.add(digest, data)
        return writer.new_chunks

    def ingest_file(self, path: str | os.PathLike[str], progress=None) -> tuple[FileDigest, int]:
        """Chunk, hash and store a file; returns its digest and how many bytes were new."""
        with MappedFile(path) as mapped:
            return self.ingest_bytes(mapped.view, progress=progress)

    def ingest_bytes(self, data: bytes | memoryview, progress=None) -> tuple[FileDigest, int]:
        with self.writer() as writer:
            digest = digest_buffer(data, on_chunk=writer.add, progress=progress)
        _ingested.set((*_ingested.get()[-(_INGESTED_KEEP - 1) :], digest))
        return digest, writer.new_bytes

    # -- reading --------------------------------------------------------------------------------

    def has(self, digest: bytes) -> bool:
        row = self._db().execute("SELECT 1 FROM chunks WHERE digest = ?", (digest,)).fetchone()
        return row is not None

    def _rows(self, digests: list[bytes]) -> dict[bytes, _Row]:
        found: dict[bytes, _Row] = {}
        db = self._db()
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), _SQL_BATCH):
            batch = unique[start : start + _SQL_BATCH]
            marks = ",".join("?" * len(batch))
            for row in db.execute(f"SELECT * FROM chunks WHERE digest IN ({marks})", batch):
                found[row[0]] = _Row(*row)
        return found

    def missing(self, digests: Iterable[bytes]) -> list[bytes]:
        """The digests (in input order, without repeats) that this store does not hold intact: a chunk
        found damaged counts as missing, so the next upload of it replaces the bad copy."""
        wanted = list(dict.fromkeys(digests))
        present = self._rows(wanted)
        damaged = self.damaged([d for d in wanted if d in present])
        return [d for d in wanted if d not in present or d in damaged]

    def damaged(self, digests: Iterable[bytes]) -> dict[bytes, str]:
        """Those of ``digests`` a read or ``verify`` has found damaged, with the reason; they stay
        marked until a good copy is stored again or ``verify`` finds them intact."""
        unique = list(dict.fromkeys(digests))
        found: dict[bytes, str] = {}
        db = self._db()
        for start in range(0, len(unique), _SQL_BATCH):
            batch = unique[start : start + _SQL_BATCH]
            marks = ",".join("?" * len(batch))
            found.update(db.execute(f"SELECT digest, reason FROM damaged WHERE digest IN ({marks})", batch))
        return found

    def _mark_damaged(self, digest: bytes, reason: str) -> None:
        """Remember damage as soon as a read finds it, so later requests fail before they start."""
        if digest:
            self._db().execute("INSERT OR REPLACE INTO damaged VALUES (?, ?)", (digest, reason))

    def _fd(self, pack: int) -> int:
        with self._fd_lock:
            fd = self._read_fds.get(pack)
            if fd is None:
                try:
                    fd = os.open(self.pack_path(pack), os.O_RDONLY)
                except FileNotFoundError as exc:
                    raise ChunkCorrupt(b"", f"pack file {self.pack_path(pack).name} is missing") from exc
                self._read_fds[pack] = fd
            return fd

    def _read_span(self, rows: list[_Row], verify: bool) -> Iterator[bytes | memoryview]:
        first, last = rows[0], rows[-1]
        length = last.offset + last.stored - first.offset
        span = os.pread(self._fd(first.pack), length, first.offset)
        view = memoryview(span)
        for row in rows:
            start = row.offset - first.offset
            if start + row.stored > len(span):
                reason = f"pack {self.pack_path(row.pack).name} is truncated"
                self._mark_damaged(row.digest, reason)
                raise ChunkCorrupt(row.digest, reason)
            try:
                data = codec.decode(row.codec, view[start : start + row.stored], row.raw)
            except Exception as exc:  # a damaged zstd frame raises the library's own error
                reason = f"cannot decode in {self.pack_path(row.pack).name}: {exc}"
                self._mark_damaged(row.digest, reason)
                raise ChunkCorrupt(row.digest, reason) from exc
            if verify and chunk_id(data) != row.digest:
                reason = f"damaged in {self.pack_path(row.pack).name}"
                self._mark_damaged(row.digest, reason)
                raise ChunkCorrupt(row.digest, reason)
            yield data

    def read_many(self, digests: list[bytes], verify: bool = True) -> Iterator[bytes | memoryview]:
        """Yield each chunk's bytes in order, merging neighbours in a pack into one read."""
        found = self._rows(digests)
        span: list[_Row] = []
        span_bytes = 0
        for digest in digests:
            row = found.get(digest)
            if row is None:
                raise ChunkMissing(digest)
            adjacent = span and span[-1].pack == row.pack and span[-1].offset + span[-1].stored == row.offset
            if span and (not adjacent or span_bytes + row.stored > SPAN_MAX):
                yield from self._read_span(span, verify)
                span, span_bytes = [], 0
            span.append(row)
            span_bytes += row.stored
        if span:
            yield from self._read_span(span, verify)

    def read(self, digest: bytes, verify: bool = True) -> bytes:
        return bytes(next(self.read_many([digest], verify=verify)))

    def file_sha256(self, chunks: list[tuple[bytes, int]]) -> str | None:
        """SHA-256 of the file these chunks make, read back from the store in one streaming pass (each
        chunk re-checked against its BLAKE3 name); None when a chunk's length is not the one given.

        Reading and decoding the next block overlaps with hashing the previous one on a second thread
        (hashlib releases the GIL), so this costs about one SHA-256 pass over the file."""
        sha = hashlib.sha256()
        lengths = iter([n for _, n in chunks])
        pending: list[bytes | memoryview] = []
        size = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as pool:
            running: Future | None = None
            for data in self.read_many([d for d, _ in chunks], verify=True):
                if len(data) != next(lengths):
                    if running is not None:
                        running.result()
                    return None
                pending.append(data)
                size += len(data)
                if size >= HASH_BLOCK:
                    block = b"".join(pending)
                    if running is not None:
                        running.result()
                    running = pool.submit(sha.update, block)
                    pending, size = [], 0
            if running is not None:
                running.result()
        for data in pending:
            sha.update(data)
        return sha.hexdigest()

    def stats(self) -> dict[str, int]:
        chunks, raw, stored = (
            self._db()
            .execute("SELECT COUNT(*), COALESCE(SUM(raw), 0), COALESCE(SUM(stored), 0) FROM chunks")
            .fetchone()
        )
        packs = self._db().execute("SELECT COUNT(*) FROM packs").fetchone()[0]
        return {"chunks": chunks, "raw_bytes": raw, "stored_bytes": stored, "packs": packs}

    # -- integrity ------------------------------------------------------------------------------

    def verify(self, progress=None) -> VerifyReport:
        """Re-read and re-hash every chunk; name each damaged pack and chunk."""
        report = VerifyReport()
        db = self._db()
        packs = db.execute("SELECT id, committed FROM packs ORDER BY id").fetchall()
        report.packs = len(packs)
        for pack, committed in packs:
            path = self.pack_path(pack)
            size = path.stat().st_size if path.exists() else -1
            if size < committed:
                report.damaged_packs.append(path.name)
            rows = db.execute("SELECT * FROM chunks WHERE pack = ? ORDER BY offset", (pack,)).fetchall()
            damaged_before = len(report.damaged_chunks)
            for row in (_Row(*r) for r in rows):
                report.chunks += 1
                report.bytes += row.raw
                reason = self._check(row, size)
                if reason:
                    report.damaged_chunks.append(
                        {"chunk": row.digest.hex(), "pack": path.name, "reason": reason}
                    )
                if progress is not None:
                    progress(row.raw)
            if len(report.damaged_chunks) > damaged_before and path.name not in report.damaged_packs:
                report.damaged_packs.append(path.name)
        return report

    def _check(self, row: _Row, pack_size: int) -> str:
        """Why a stored chunk is unreadable, or "" when it is intact."""
        if pack_size < row.offset + row.stored:
            self._mark_damaged(row.digest, "bytes missing from the pack")
            return "bytes missing from the pack"
        try:
            for _ in self._read_span([row], verify=True):
                pass
        except ChunkCorrupt as exc:
            return exc.reason if "decode" in exc.reason else "bytes do not match the chunk's BLAKE3 digest"
        self._db().execute("DELETE FROM damaged WHERE digest = ?", (row.digest,))  # intact after all
        return ""

    def close(self) -> None:
        with self._fd_lock:
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
        self._db.close()
        self._lock_file.close()
