"""Push: chunk locally, ask the node which chunks it lacks, send only those, commit against the parent seen.

The commit names the head the client saw before it started, so two racing pushes to one branch
cannot both land: the node refuses the second with a conflict instead of silently dropping work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NotFound, ProtocolError
from ..store import Chunk, FileDigest, digest_buffer, digest_file, iter_file_chunks
from .client import NodeClient
from .manifest import FileEntry, check_path

UPLOAD_BATCH_BYTES = 16 * 1024 * 1024
UPLOAD_STREAMS = 4
IGNORED_NAMES = {".git", ".iollm", "__pycache__", ".DS_Store"}

Progress = Callable[[str, int, int], None]  # (phase, done, total) in bytes


@dataclass
class LocalFile:
    path: str  # path inside the repository
    source: Path
    digest: FileDigest | None = None


def collect_files(source: Path, prefix: str = "") -> list[LocalFile]:
    """A file becomes one entry named by its basename; a folder contributes every file under it.

    Symbolic links in a folder: a link to a file inside the folder is stored as the file it points to;
    a link whose target is outside the folder is refused (all such links are named in the error), so
    that a push never publishes bytes from elsewhere on the disk (``leak.txt -> ~/.iollm/token``).
    Links to folders are not followed, and dangling links are skipped."""
    if not source.exists():
        raise ProtocolError(f"{source} does not exist: give a file or a folder to push")
    if source.is_file():
        return [LocalFile(check_path(prefix + source.name), source)]
    root = source.resolve()
    found: list[LocalFile] = []
    outside: list[str] = []
    for folder, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_NAMES)
        for name in sorted(names):
            if name in IGNORED_NAMES:
                continue
            full = Path(folder, name)
            rel = full.relative_to(source).as_posix()
            if full.is_symlink():
                target = full.resolve()
                if not target.is_file():
                    continue
                if not target.is_relative_to(root):
                    outside.append(f"{rel} -> {os.readlink(full)}")
                    continue
                full = target  # read the bytes from the file inside the folder, not through the link
            found.append(LocalFile(check_path(prefix + rel), full))
    if outside:
        raise ProtocolError(
            f"refusing to push {source}: {len(outside)} symbolic link(s) point outside the folder "
            f"({'; '.join(outside)}); copy the files in or remove the links"
        )
    if not found:
        raise ProtocolError(f"{source} has no files to push")
    return found


def branch_head(client: NodeClient, repo_type: str, repo_id: str, branch: str = "main") -> str | None:
    """The commit ``branch`` points at, or None for a branch (or repository) that does not exist yet."""
    try:
        return client.refs(repo_type, repo_id)["branches"].get(branch)
    except NotFound:
        return None


def push(
    client: NodeClient,
    source: Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    branch: str = "main",
    tag: str | None = None,
    message: str = "",
    card: dict[str, Any] | None = None,
    private: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Publish a file or folder as a new commit; returns transfer figures for ``--json``."""
    started = time.perf_counter()
    files = collect_files(Path(source))
    bytes_total = sum(f.source.stat().st_size for f in files)
    done = 0

    def hashed(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("hashing", done, bytes_total)

    for local in files:
        local.digest = digest_file(local.source, progress=hashed)
    head = branch_head(client, repo_type, repo_id, branch)

    unique = chunk_sources(files)
    missing = client.missing_chunks(list(unique))
    bytes_sent = _upload(client, missing, unique, progress)

    reply = client.commit(
        repo_type,
        repo_id,
        {
            "branch": branch,
            "parent": head,
            "check_parent": True,
            "message": message,
            "card": card or {},
            "private": private,
            "files": [
                FileEntry.from_digest(f.path, f.digest).model_dump(mode="json")
                for f in files
                if f.digest is not None
            ],
        },
    )
    if tag:
        client.tag(repo_type, repo_id, reply["commit"], tag)
    return {
        "repo": repo_id,
        "type": repo_type,
        "revision": branch,
        "tag": tag,
        "commit": reply["commit"],
        "parent": head,
        "files": len(files),
        "bytes_total": bytes_total,
        "bytes_sent": bytes_sent,
        "chunks_total": sum(len(f.digest.chunks) for f in files if f.digest),
        "chunks_unique": len(unique),
        "chunks_sent": len(missing),
        "seconds": round(time.perf_counter() - started, 3),
    }


def chunk_sources(files: list[LocalFile]) -> dict[bytes, tuple[LocalFile, int, int]]:
    """Each distinct chunk of hashed ``files`` with where to read it: (file, offset, length)."""
    unique: dict[bytes, tuple[LocalFile, int, int]] = {}
    for local in files:
        assert local.digest is not None
        for chunk in local.digest.chunks:
            unique.setdefault(chunk.digest, (local, chunk.offset, chunk.length))
    return unique


def upload_missing(client: NodeClient, files: list[LocalFile], progress: Progress | None = None) -> int:
    """Send the chunks of hashed ``files`` that the node lacks; returns bytes sent."""
    where = chunk_sources(files)
    return _upload(client, client.missing_chunks(list(where)), where, progress)


def _upload(
    client: NodeClient,
    missing: list[bytes],
    where: dict[bytes, tuple[LocalFile, int, int]],
    progress: Progress | None,
) -> int:
    """Send missing chunks in ~16 MiB batches over parallel streams; returns bytes sent."""
    batches: list[list[bytes]] = [[]]
    size = 0
    for digest in missing:
        length = where[digest][2]
        if size + length > UPLOAD_BATCH_BYTES and batches[-1]:
            batches.append([])
            size = 0
        batches[-1].append(digest)
        size += length
    total = sum(where[d][2] for d in missing)
    sent = 0

    def send(batch: list[bytes]) -> int:
        by_file: dict[Path, list] = {}
        for digest in batch:
            local, offset, length = where[digest]
            by_file.setdefault(local.source, []).append((digest, offset, length))
        frames: list[tuple[bytes, bytes]] = []
        for source, items in by_file.items():
            chunks = [Chunk(offset, length, digest) for digest, offset, length in items]
            frames.extend((chunk.digest, data) for chunk, data in iter_file_chunks(source, chunks))
        client.upload_chunks(frames)
        return sum(len(d) for _, d in frames)

    if not missing:
        return 0
    with ThreadPoolExecutor(max_workers=UPLOAD_STREAMS, thread_name_prefix="upload") as pool:
        for n in pool.map(send, [b for b in batches if b]):
            sent += n
            if progress:
                progress("uploading", sent, total)
    return sent


def put_file(
    client: NodeClient,
    repo_id: str,
    path: str,
    data: bytes,
    *,
    repo_type: str = "model",
    branch: str = "main",
    message: str = "",
) -> str:
    """Add or replace one small file on top of the branch head, keeping every other file and the card.

    Returns the new commit id. A concurrent commit to the branch makes this fail with a conflict
    (the parent is checked), never lose the other commit's files.
    """
    check_path(path)
    head = branch_head(client, repo_type, repo_id, branch)
    files: list[dict[str, Any]] = []
    card: dict[str, Any] = {}
    if head is not None:
        manifest = client.manifest(repo_type, repo_id, head)
        files = [f.model_dump() for f in manifest.files if f.path != path]
        card = manifest.card
    commit, _ = commit_bytes(
        client,
        repo_id,
        {path: data},
        head,
        repo_type=repo_type,
        branch=branch,
        message=message,
        card=card,
        keep=files,
    )
    return commit


def commit_bytes(
    client: NodeClient,
    repo_id: str,
    files: dict[str, bytes],
    parent: str | None,
    *,
    repo_type: str = "model",
    branch: str = "main",
    message: str = "",
    card: dict[str, Any] | None = None,
    private: bool | None = None,
    keep: list[dict[str, Any]] | None = None,
) -> tuple[str, int]:
    """Commit in-memory files (in path order, after the entries in ``keep``) as the next commit after
    ``parent`` exactly: the node refuses with a conflict if the branch moved. Returns (commit id,
    bytes sent). Files are chunked from memory, not memory-mapped: a Dask worker's profiler may hold
    a frame that pins a map past its close. ``private`` applies to a repository this creates."""
    chunks: dict[bytes, bytes] = {}
    entries = []
    for path, data in sorted(files.items()):
        digest = digest_buffer(data, on_chunk=lambda d, piece: chunks.setdefault(d, bytes(piece)))
        entries.append(FileEntry.from_digest(path, digest).model_dump(mode="json"))
    missing = client.missing_chunks(list(chunks))
    batch: list[tuple[bytes, bytes]] = []
    size = 0
    for digest in missing:
        batch.append((digest, chunks[digest]))
        size += len(chunks[digest])
        if size >= UPLOAD_BATCH_BYTES:
            client.upload_chunks(batch)
            batch, size = [], 0
    if batch:
        client.upload_chunks(batch)
    body: dict[str, Any] = {
        "branch": branch,
        "parent": parent,
        "check_parent": True,
        "message": message,
        "card": card or {},
        **({"private": private} if private is not None else {}),
        "files": [*(keep or []), *entries],
    }
    return str(client.commit(repo_type, repo_id, body)["commit"]), sum(len(chunks[d]) for d in missing)
