"""Content trust, enforced here for every way into the hub (native commits, Hugging Face commits,
environments, imports, mirrors):

* A commit may name a chunk only if the committer sent its bytes (``hub_chunk_uploads``, or ingested
  in this very context: see ``store.ingested_here``) or can read a repository that already references
  it (``hub_repo_chunks``). Anything else is reported missing, exactly like a chunk the node lacks, so
  a commit is no oracle for someone else's private content.
* Every file's SHA-256 is computed by the node from the chunks before it is recorded (or matched
  against a row of ``hub_contents``, which only that computation writes). A false hash or chunk length
  is refused; the first claim on a hash wins nothing.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import zstandard
from sqlalchemy import false, or_, select, true

from ..database import Database, insert_ignore, utc_now_iso
from ..errors import IntegrityError, MissingChunks, RevisionNotFound
from ..protocol import FileEntry, Manifest, parse_manifest
from ..store import ChunkStore, FileDigest, ingested_here
from .accounts import Identity
from .tables import chunk_uploads, commits, contents, hub_meta, repo_chunks, repos

if TYPE_CHECKING:
    from .repos import Repo

SQL_BATCH = 900
_MISSING_HINT = (
    "upload their bytes (POST /api/chunks; `iollm push` does this) and commit again: a commit may name "
    "only chunks you sent or can read in a repository"
)
log = logging.getLogger("iollm.hub")


def pack_chunks(chunks: list[tuple[str, int]]) -> bytes:
    return b"".join(bytes.fromhex(d) + struct.pack("<I", n) for d, n in chunks)


def unpack_chunks(raw: bytes) -> list[tuple[str, int]]:
    return [(raw[i : i + 32].hex(), struct.unpack_from("<I", raw, i + 32)[0]) for i in range(0, len(raw), 36)]


def batches(items: list[Any], size: int = SQL_BATCH) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def content_key(entry: FileEntry) -> tuple[str, int, bytes]:
    return entry.sha256, entry.size, pack_chunks(entry.chunks)


def digest_key(digest: FileDigest) -> tuple[str, int, bytes]:
    return digest.sha256, digest.size, pack_chunks([(c.digest.hex(), c.length) for c in digest.chunks])


class ContentTrust:
    """Who may name, fetch or reuse which chunks and files. The hub (``repos.Hub``) is one: it provides
    the database, the chunk store and its commits' manifests."""

    db: Database
    store: ChunkStore

    def manifest(self, commit_id: str) -> Manifest:
        raise NotImplementedError

    @staticmethod
    def _readable(caller: Identity):
        """SQL condition on ``repos``: the caller may read the repository."""
        if caller.is_admin:
            return true()
        if caller.anonymous:
            return repos.c.private == false()
        return or_(repos.c.private == false(), repos.c.namespace.in_([caller.name, *caller.orgs]))

    def readable_chunks(self, caller: Identity, digests: list[bytes]) -> set[bytes]:
        """Those of ``digests`` referenced by a repository the caller can read."""
        found: set[bytes] = set()
        condition = self._readable(caller)
        with self.db.read() as conn:
            for batch in batches(list(dict.fromkeys(digests))):
                query = (
                    select(repo_chunks.c.digest)
                    .join(repos, repos.c.id == repo_chunks.c.repo_id)
                    .where(repo_chunks.c.digest.in_(batch) & condition)
                    .distinct()
                )
                found.update(bytes(row[0]) for row in conn.execute(query))
        return found

    def usable_chunks(self, caller: Identity, digests: list[bytes]) -> set[bytes]:
        """Those of ``digests`` the caller may name in a commit: sent by them, or readable."""
        wanted = list(dict.fromkeys(digests))
        found: set[bytes] = set()
        if caller.name:
            with self.db.read() as conn:
                for batch in batches(wanted):
                    query = select(chunk_uploads.c.digest).where(
                        (chunk_uploads.c.user_name == caller.name) & chunk_uploads.c.digest.in_(batch)
                    )
                    found.update(bytes(row[0]) for row in conn.execute(query))
        rest = [d for d in wanted if d not in found]
        return found | (self.readable_chunks(caller, rest) if rest else set())

    def missing_for(self, caller: Identity, digests: list[bytes]) -> list[bytes]:
        """The digests (in order, without repeats) the caller must upload before naming them in a
        commit: absent from the store, or present but neither sent by the caller nor readable by them.
        The two look the same, so nobody learns whether someone else's private content exists."""
        wanted = list(dict.fromkeys(digests))
        absent = set(self.store.missing(wanted))
        present = [d for d in wanted if d not in absent]
        usable = self.usable_chunks(caller, present) if present else set()
        return [d for d in wanted if d not in usable]

    def unreadable_for(self, caller: Identity, digests: list[bytes]) -> list[bytes]:
        """The digests the caller may not fetch: absent, or in no repository the caller can read."""
        wanted = list(dict.fromkeys(digests))
        absent = set(self.store.missing(wanted))
        present = [d for d in wanted if d not in absent]
        readable = self.readable_chunks(caller, present) if present else set()
        return [d for d in wanted if d not in readable]

    def record_uploads(self, user: str, digests: Iterable[bytes]) -> None:
        """``user`` sent these chunks' bytes: from now on they may name them in commits."""
        rows = [{"user_name": user, "digest": d} for d in dict.fromkeys(digests)]
        if rows:
            with self.db.write() as conn:
                for batch in batches(rows, 5000):
                    insert_ignore(conn, chunk_uploads, batch)

    def record_contents(self, digests: Iterable[FileDigest]) -> None:
        """Remember files whose SHA-256 the node computed itself (an ingest, a verified archive)."""
        rows = [self._content_row(*digest_key(d)) for d in digests]
        if rows:
            with self.db.write() as conn:
                insert_ignore(conn, contents, rows)

    @staticmethod
    def _content_row(sha256: str, size: int, packed: bytes) -> dict[str, Any]:
        return {"sha256": sha256, "size": size, "chunks": packed, "created_at": utc_now_iso()}

    def ingest(self, user: str | None, data: bytes | memoryview) -> FileDigest:
        """Chunk and store bytes a user sent (an upload): records the content and the user's right to it."""
        digest, _ = self.store.ingest_bytes(data)
        uploads = [{"user_name": user, "digest": d} for d in dict.fromkeys(c.digest for c in digest.chunks)]
        with self.db.write() as conn:
            insert_ignore(conn, contents, [self._content_row(*digest_key(digest))])
            for batch in batches(uploads if user else [], 5000):
                insert_ignore(conn, chunk_uploads, batch)
        return digest

    def content_for(
        self, caller: Identity, sha256: str, size: int | None = None
    ) -> tuple[int, list[tuple[str, int]]] | None:
        """(size, chunks) of a file the node has hashed to ``sha256``, if the caller may use all of it
        (sent it, or can read a repository holding it); else None, as if the node never saw it."""
        with self.db.read() as conn:
            row = conn.execute(
                select(contents.c.size, contents.c.chunks).where(contents.c.sha256 == sha256)
            ).first()
        if row is None or (size is not None and row.size != size):
            return None
        chunks = unpack_chunks(row.chunks)
        digests = [bytes.fromhex(d) for d, _ in chunks]
        if self.store.missing(digests) or len(self.usable_chunks(caller, digests)) != len(set(digests)):
            return None
        return row.size, chunks

    def _admit(self, caller: Identity | None, files: list[FileEntry]) -> list[dict[str, Any]]:
        """The content rules of a commit (module docstring). ``caller`` None is the node's own work
        (mirrors, imports): its chunks need only be present. Returns the ``hub_contents`` rows the
        commit proves (file hashes the node computed now)."""
        wanted = list(dict.fromkeys(d for f in files for d in f.digests()))
        ingested = ingested_here()
        held = {c.digest for digest in ingested for c in digest.chunks}
        if caller is None:
            missing = self.store.missing(wanted)
        else:
            missing = self.missing_for(caller, [d for d in wanted if d not in held])
            missing += self.store.missing([d for d in wanted if d in held])
        if missing:
            raise MissingChunks(
                f"{len(missing)} chunk(s) named by the manifest are not on this node for you; {_MISSING_HINT}",
                missing=[d.hex() for d in missing[:100]],
            )
        return self._verify_contents(files, {digest_key(d) for d in ingested})

    def _verify_contents(
        self, files: list[FileEntry], computed: set[tuple[str, int, bytes]]
    ) -> list[dict[str, Any]]:
        """Check each file's size, chunk lengths and SHA-256 against its chunks' bytes, reading only
        files whose exact (hash, chunking) the node has not computed before."""
        todo = {content_key(f): f for f in files}
        rows = [self._content_row(*key) for key in todo if key in computed]
        todo = {key: f for key, f in todo.items() if key not in computed}
        if todo:
            with self.db.read() as conn:
                for batch in batches(sorted({key[0] for key in todo})):
                    query = select(contents.c.sha256, contents.c.size, contents.c.chunks).where(
                        contents.c.sha256.in_(batch)
                    )
                    for row in conn.execute(query):
                        todo.pop((row.sha256, row.size, bytes(row.chunks)), None)
        for key, entry in todo.items():
            actual = self.store.file_sha256([(bytes.fromhex(d), n) for d, n in entry.chunks])
            if actual is None:
                raise IntegrityError(
                    f"{entry.path}: the chunk lengths in the manifest are not those of the chunks; "
                    "nothing was committed",
                    path=entry.path,
                )
            if actual != entry.sha256:
                raise IntegrityError(
                    f"{entry.path}: its chunks hash to sha256 {actual}, not the {entry.sha256} the "
                    "manifest claims; nothing was committed",
                    path=entry.path,
                )
            rows.append(self._content_row(*key))
        return rows

    def _index_chunks(self, conn, repo: Repo, manifest: Manifest) -> None:
        """Record the chunks this commit adds to the repository (files unchanged from the parent are
        indexed already)."""
        inherited: set[tuple[str, int, bytes]] = set()
        if manifest.parents:
            try:
                inherited = {content_key(f) for f in self.manifest(manifest.parents[0]).files}
            except RevisionNotFound:
                pass  # an imported commit whose parent this node lacks: index everything
        digests = dict.fromkeys(
            d for f in manifest.files if content_key(f) not in inherited for d in f.digests()
        )
        rows = [{"digest": d, "repo_id": repo.id} for d in digests]
        for batch in batches(rows, 5000):
            insert_ignore(conn, repo_chunks, batch)

    def _index_existing_commits(self) -> None:
        """One-time migration: index the chunks of commits made before ``hub_repo_chunks`` existed, so
        their repositories stay readable. File hashes of those commits are not trusted (they were
        claims); each is verified the first time a new commit or an LFS upload names it."""
        with self.db.read() as conn:
            if conn.execute(select(hub_meta.c.value).where(hub_meta.c.key == "repo_chunks")).first():
                return
        with self.db.write() as conn:
            if conn.execute(select(hub_meta.c.value).where(hub_meta.c.key == "repo_chunks")).first():
                return
            ids = [row[0] for row in conn.execute(select(commits.c.id))]
            for commit_id in ids:
                row = conn.execute(
                    select(commits.c.repo_id, commits.c.manifest).where(commits.c.id == commit_id)
                ).one()
                manifest = parse_manifest(zstandard.ZstdDecompressor().decompress(row.manifest))
                digests = dict.fromkeys(d for f in manifest.files for d in f.digests())
                for batch in batches([{"digest": d, "repo_id": row.repo_id} for d in digests], 5000):
                    insert_ignore(conn, repo_chunks, batch)
            insert_ignore(conn, hub_meta, [{"key": "repo_chunks", "value": utc_now_iso()}])
        if ids:
            log.info("indexed the chunks of %d existing commits for read checks", len(ids))
