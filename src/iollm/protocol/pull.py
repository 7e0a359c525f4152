"""Pull: fetch a manifest, then only the chunks the local cache lacks, in parallel, from several peers.

Every chunk is checked against its BLAKE3 name as it arrives and every file against its SHA-256
before it is placed. A partial file is kept as ``<sha256>.incomplete``; a rerun re-hashes what is
there and fetches only chunks that do not match, so a pull killed at any point resumes. A peer that
is down or serves one bad byte is dropped for the rest of the pull and its work goes to another.

A file already in the local cache is reused only once the cache has verified it (``LocalCache.has_blob``):
a damaged or edited blob is fetched again. A pulled file is an independent copy of its blob, so editing
it cannot change the cache or another pulled folder. The copy is a copy-on-write clone (reflink, no extra
disk) where the file system supports one (Btrfs, XFS, bcachefs, ZFS 2.2+), and a plain copy elsewhere
(ext4). Only the cache's own snapshot folders (a pull without a destination) get hard links to the
blobs, as does any pull with ``link=True``, for readers that never write and must not double the disk
used. An edit through such a link changes the blob's mtime and ctime, so the cache notices it and
fetches that blob again. Why copies cost what they do on ext4 (a second full copy of the model): a
folder the user asked for is theirs to edit (a fine-tune in place, a patched config). That edit must
not silently change the cache, or every other folder pulled from it, and reach the next pull.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..errors import IntegrityError, IollmError, RevisionNotFound, Unavailable
from ..store import chunk_id
from .cache import LocalCache
from .client import NodeClient
from .manifest import FileEntry, Manifest, is_commit_id

FETCH_BATCH_BYTES = 8 * 1024 * 1024
FETCH_STREAMS = 8
HASH_AS_YOU_GO_BYTES = 8 * 1024 * 1024  # larger files are SHA-256 hashed while they download
Progress = Callable[[str, int, int], None]


class _PrefixHasher:
    """SHA-256 of a file assembled out of order, computed on a thread as its prefix completes, so
    verifying the whole file costs almost nothing once the last chunk has landed."""

    def __init__(self, fd: int, entry: FileEntry) -> None:
        self.size = entry.size
        self.ends: dict[int, int] = {}
        offset = 0
        for _, length in entry.chunks:
            self.ends[offset] = offset + length
            offset += length
        self.done: set[int] = set()
        self.frontier = 0
        self.aborted = False
        self.sha = hashlib.sha256()
        self.cond = threading.Condition()
        self.map = mmap.mmap(fd, self.size, access=mmap.ACCESS_READ)
        self.thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self.thread.start()

    def mark(self, offset: int) -> None:
        with self.cond:
            self.done.add(offset)
            if offset == self.frontier:
                self.cond.notify()

    def _run(self) -> None:
        view = memoryview(self.map)
        try:
            while True:
                with self.cond:
                    while not self.aborted and self.frontier < self.size and self.frontier not in self.done:
                        self.cond.wait()
                    if self.aborted or self.frontier >= self.size:
                        return
                    start = end = self.frontier
                    while end in self.done and end < self.size:
                        end = self.ends[end]
                self.sha.update(view[start:end])
                with self.cond:
                    self.frontier = end
        finally:
            view.release()

    def hexdigest(self) -> str:
        self.thread.join()
        self.map.close()
        return self.sha.hexdigest()

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.cond.notify()
        self.thread.join()
        self.map.close()


@dataclass
class _Target:
    """A file being assembled: its incomplete path, descriptor, and the chunks it still needs."""

    entry: FileEntry
    path: Path
    fd: int = -1
    places: dict[bytes, list[int]] = field(default_factory=dict)  # digest -> offsets still to fill
    lengths: dict[bytes, int] = field(default_factory=dict)
    hasher: _PrefixHasher | None = None

    def start_hashing(self) -> None:
        """Hash big files as they complete; chunks already in place count as done."""
        if self.entry.size < HASH_AS_YOU_GO_BYTES:
            return
        self.hasher = _PrefixHasher(self.fd, self.entry)
        pending = {o for offsets in self.places.values() for o in offsets}
        for offset in self.hasher.ends:
            if offset not in pending:
                self.hasher.mark(offset)

    def placed(self, offset: int) -> None:
        if self.hasher is not None:
            self.hasher.mark(offset)


class PeerSet:
    """Peers in preference order; one that fails is never asked again during this pull."""

    def __init__(self, clients: list[NodeClient]) -> None:
        self.clients = clients
        self.bad: dict[str, str] = {}
        self._turn = 0
        self._lock = threading.Lock()

    def healthy(self) -> list[NodeClient]:
        return [c for c in self.clients if c.endpoint not in self.bad]

    def pick(self, exclude: set[str]) -> NodeClient | None:
        with self._lock:
            options = [c for c in self.healthy() if c.endpoint not in exclude]
            if not options:
                return None
            choice = options[self._turn % len(options)]
            self._turn += 1
            return choice

    def fail(self, client: NodeClient, reason: str) -> None:
        with self._lock:
            self.bad.setdefault(client.endpoint, reason)


def fetch_manifest(peers: PeerSet, repo_type: str, repo_id: str, revision: str) -> Manifest:
    """The first peer that answers; a commit id is checked against the manifest's own hash."""
    errors: list[str] = []
    for client in peers.clients:
        try:
            manifest = client.manifest(repo_type, repo_id, revision)
        except (Unavailable, IollmError) as exc:
            if isinstance(exc, Unavailable):
                peers.fail(client, str(exc))
            errors.append(f"{client.endpoint}: {exc}")
            if isinstance(exc, IollmError) and exc.status == 404 and len(peers.clients) == 1:
                raise
            continue
        if is_commit_id(revision) and manifest.commit_id != revision:
            peers.fail(client, "served a manifest for another commit")
            continue
        return manifest
    if all("404" in e or "not found" in e.lower() for e in errors):
        raise RevisionNotFound(
            f"{repo_type} {repo_id}@{revision} not found on any peer: " + "; ".join(errors)
        )
    raise Unavailable(f"no peer could serve {repo_id}@{revision}: " + "; ".join(errors))


def _verify_existing(target: _Target) -> int:
    """Resume: keep chunks whose bytes in the incomplete file already match their names."""
    kept = 0
    for digest, offsets in list(target.places.items()):
        remaining = []
        for offset in offsets:
            length = target.lengths[digest]
            data = os.pread(target.fd, length, offset)
            if len(data) == length and chunk_id(data) == digest:
                kept += length
            else:
                remaining.append(offset)
        if remaining:
            target.places[digest] = remaining
        else:
            del target.places[digest]
    return kept


class _Assembler:
    """Writes verified chunks to every place that needs them, across all files of the pull."""

    def __init__(self, targets: list[_Target]) -> None:
        self.where: dict[bytes, list[tuple[_Target, int]]] = {}
        self.lengths: dict[bytes, int] = {}
        for target in targets:
            for digest, offsets in target.places.items():
                self.where.setdefault(digest, []).extend((target, o) for o in offsets)
        for target in targets:
            for digest, length in target.entry.chunks:
                self.lengths[bytes.fromhex(digest)] = length
        self.lock = threading.Lock()
        self.received = 0
        self.reused = 0

    def place(self, digest: bytes, data: bytes | memoryview) -> None:
        for target, offset in self.where.get(digest, ()):
            written = os.pwrite(target.fd, data, offset)
            if written != len(data):
                raise OSError(f"short write to {target.path}")
            target.placed(offset)

    def pending(self) -> list[bytes]:
        return list(self.where)


def _copy_local(cache: LocalCache, assembler: _Assembler) -> list[bytes]:
    """Fill chunks found in other cached files; returns the digests still to fetch."""
    local = cache.locate(assembler.pending())
    remote = []
    for digest in assembler.pending():
        hit = local.get(digest)
        if hit is not None:
            path, offset, length = hit
            with open(path, "rb") as handle:
                data = os.pread(handle.fileno(), length, offset)
            if chunk_id(data) == digest:
                assembler.place(digest, data)
                assembler.reused += len(data)
                continue
        remote.append(digest)
    return remote


def _fetch_batch(
    peers: PeerSet, assembler: _Assembler, batch: list[bytes], on_bytes: Callable[[int], None]
) -> None:
    """Fetch one batch, moving to another peer on any failure, re-asking only what is still missing."""
    todo = list(batch)
    tried: set[str] = set()
    while todo:
        client = peers.pick(tried)
        if client is None:
            reasons = "; ".join(f"{k}: {v}" for k, v in peers.bad.items()) or "no peers"
            raise Unavailable(f"{len(todo)} chunk(s) could not be fetched from any peer ({reasons})")
        tried.add(client.endpoint)
        done = 0
        try:
            response = client.open_chunk_stream(todo)
            try:
                buffer = bytearray()
                position = 0
                for piece in response.iter_raw():
                    buffer += piece
                    while done < len(todo):
                        length = assembler.lengths[todo[done]]
                        if len(buffer) - position < length:
                            break
                        view = memoryview(buffer)[position : position + length]
                        if chunk_id(view) != todo[done]:
                            view.release()
                            raise IntegrityError(
                                f"{client.endpoint} sent bytes that do not match chunk {todo[done].hex()}"
                            )
                        assembler.place(todo[done], view)
                        view.release()
                        position += length
                        on_bytes(length)
                        done += 1
                    if position > (4 << 20):
                        del buffer[:position]
                        position = 0
            finally:
                response.close()
            if done < len(todo):
                raise IntegrityError(f"{client.endpoint} ended the stream after {done} of {len(todo)} chunks")
            todo = []
        except (IollmError, httpx.HTTPError) as exc:
            todo = todo[done:]
            peers.fail(client, str(exc))


def _batches(digests: list[bytes], lengths: dict[bytes, int]) -> list[list[bytes]]:
    batches: list[list[bytes]] = [[]]
    size = 0
    for digest in digests:
        if size + lengths[digest] > FETCH_BATCH_BYTES and batches[-1]:
            batches.append([])
            size = 0
        batches[-1].append(digest)
        size += lengths[digest]
    return [b for b in batches if b]


def _sha256_of(fd: int, size: int) -> str:
    if size == 0:
        return hashlib.sha256().hexdigest()
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mapped:
        return hashlib.sha256(mapped).hexdigest()


def _finish(cache: LocalCache, target: _Target) -> None:
    """Check the whole file's SHA-256, then make it a read-only blob."""
    if target.hasher is not None:
        digest = target.hasher.hexdigest()
        target.hasher = None
    else:
        digest = _sha256_of(target.fd, target.entry.size)
    os.close(target.fd)
    target.fd = -1
    if digest != target.entry.sha256:
        target.path.unlink(missing_ok=True)
        raise IntegrityError(
            f"{target.entry.path}: assembled file hashes to {digest}, manifest says {target.entry.sha256}; "
            "the partial file was removed, pull again"
        )
    blob = cache.blob_path(target.entry.sha256)
    os.chmod(target.path, 0o444)
    os.replace(target.path, blob)
    cache.add_blob(target.entry.sha256, [(bytes.fromhex(d), n) for d, n in target.entry.chunks])


FICLONE = 0x40049409  # Linux _IOW(0x94, 9, int): share the source's extents, copy-on-write


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to a new file ``target``: a reflink clone where the file system can make one,
    else a full copy done in the kernel."""
    if sys.platform.startswith("linux"):
        with open(source, "rb") as src, open(target, "xb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
                return
            except OSError:
                pass
    shutil.copyfile(source, target)


def place_file(blob: Path, destination: Path, *, link: bool = False) -> None:
    """Put a verified blob at ``destination`` atomically: an independent copy (see the module
    docstring), or a hard link to the blob when ``link`` is set and the file system allows one."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if link and destination.exists() and os.path.samefile(blob, destination):
        return
    temp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    try:
        if link:
            try:
                os.link(blob, temp)
            except OSError:
                copy_file(blob, temp)
        else:
            copy_file(blob, temp)
        os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def pull(
    peers: list[NodeClient],
    repo_type: str,
    repo_id: str,
    revision: str,
    cache: LocalCache,
    destination: Path | None = None,
    *,
    include: Callable[[str], bool] | None = None,
    progress: Progress | None = None,
    link: bool | None = None,
) -> dict[str, Any]:
    """Make ``destination`` (default: a snapshot folder in the cache) hold the files of
    ``repo_id@revision``; returns transfer figures. ``link``: hard-link the files to the cache's blobs
    instead of copying them (default: only for the cache's own snapshot folder); for readers only."""
    started = time.perf_counter()
    peer_set = PeerSet(peers)
    manifest = fetch_manifest(peer_set, repo_type, repo_id, revision)
    if link is None:
        link = destination is None
    if destination is None:
        destination = cache.snapshot_path(repo_type, repo_id, manifest.commit_id)
    files = [f for f in manifest.files if include is None or include(f.path)]
    bytes_total = sum(f.size for f in files)

    distinct = list({entry.sha256: entry for entry in files}.values())
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="check") as pool:
        present = list(pool.map(lambda e: cache.has_blob(e.sha256, e.size), distinct))
    cached = {e.sha256 for e, ok in zip(distinct, present, strict=True) if ok}
    targets: dict[str, _Target] = {}
    resumed = 0
    for entry in files:
        if entry.sha256 in targets or entry.sha256 in cached:
            continue
        target = _Target(entry, cache.incomplete_path(entry.sha256))
        existed = target.path.exists()
        if existed:
            os.chmod(target.path, 0o644)
        target.fd = os.open(target.path, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(target.fd, entry.size)
        offset = 0
        for digest_hex, length in entry.chunks:
            digest = bytes.fromhex(digest_hex)
            target.places.setdefault(digest, []).append(offset)
            target.lengths[digest] = length
            offset += length
        if existed:
            resumed += _verify_existing(target)
        target.start_hashing()
        targets[entry.sha256] = target

    assembler = _Assembler(list(targets.values()))
    received = 0
    chunks_received = 0
    progress_lock = threading.Lock()
    try:
        remote = _copy_local(cache, assembler)
        need = sum(assembler.lengths[d] for d in remote)

        def on_bytes(n: int) -> None:
            nonlocal received, chunks_received
            with progress_lock:
                received += n
                chunks_received += 1
                if progress:
                    progress("downloading", received, need)

        batches = _batches(remote, assembler.lengths)
        if batches:
            with ThreadPoolExecutor(max_workers=FETCH_STREAMS, thread_name_prefix="fetch") as pool:
                for future in [pool.submit(_fetch_batch, peer_set, assembler, b, on_bytes) for b in batches]:
                    future.result()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify") as pool:
            list(pool.map(lambda t: _finish(cache, t), targets.values()))
    finally:
        for target in targets.values():
            if target.hasher is not None:
                target.hasher.abort()
            if target.fd >= 0:
                os.close(target.fd)

    for entry in files:
        if entry.size == 0 and not cache.has_blob(entry.sha256, 0):
            cache.blob_path(entry.sha256).touch()
        blob = cache.blob_path(entry.sha256)
        before = os.stat(blob)
        place_file(blob, destination / entry.path, link=link)
        if link:
            cache.linked(entry.sha256, before)
    cache.remember_ref(f"{repo_type}/{repo_id}", revision, manifest.commit_id)
    return {
        "repo": repo_id,
        "type": repo_type,
        "revision": revision,
        "commit": manifest.commit_id,
        "path": str(destination),
        "files": len(files),
        "bytes_total": bytes_total,
        "bytes_received": received,
        "bytes_reused": assembler.reused,
        "bytes_resumed": resumed,
        "chunks_total": sum(len(f.chunks) for f in files),
        "chunks_received": chunks_received,
        "peers_failed": peer_set.bad,
        "seconds": round(time.perf_counter() - started, 3),
    }
