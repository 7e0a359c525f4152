"""Repositories, commits and refs: the Model Network Layer's source of truth.

A commit becomes visible only when its branch ref moves, in one transaction, from the parent the
writer expected to the new commit (compare-and-swap). Of two racing pushes one wins and the other gets
a conflict; a writer killed at any point leaves only unreferenced chunks, which the next push reuses.

Content trust, enforced here for every way in (native commits, Hugging Face commits, environments,
imports, mirrors):

* A commit may name a chunk only if the committer sent its bytes (``hub_chunk_uploads``, or ingested
  in this very context: see ``store.ingested_here``) or can read a repository that already references
  it (``hub_repo_chunks``). Anything else is reported missing, exactly like a chunk the node lacks, so
  a commit is no oracle for someone else's private content.
* Every file's SHA-256 is computed by the node from the chunks before it is recorded (or matched
  against a row of ``hub_contents``, which only that computation writes). A false hash or chunk length
  is refused; the first claim on a hash wins nothing.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import zstandard
from sqlalchemy import false, or_, select, true

from ..database import Database, insert_ignore, utc_now_iso
from ..errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    MissingChunks,
    ProtocolError,
    RepoNotFound,
    RevisionNotFound,
)
from ..protocol import (
    REPO_TYPES,
    FileEntry,
    Manifest,
    check_file_list,
    check_name,
    is_commit_id,
    parse_manifest,
    split_repo_id,
)
from ..store import ChunkStore, FileDigest, forget_ingested, ingested_here
from ..store.reader import ChunkedFile
from . import cards
from .accounts import Identity
from .front_matter import MAX_FRONT_MATTER, readme_metadata
from .names import check_namespace
from .tables import chunk_uploads, commits, contents, hub_meta, refs, repo_chunks, repos

DEFAULT_BRANCH = "main"
_MANIFEST_CACHE = 64
_SQL_BATCH = 900
_MISSING_HINT = (
    "upload their bytes (POST /api/chunks; `iollm push` does this) and commit again: a commit may name "
    "only chunks you sent or can read in a repository"
)
log = logging.getLogger("iollm.hub")
_CARD_KEYS_FROM_DECLARED = ("license", "base_model", "lineage", "description", "tags", "source", "upstream")


@dataclass(frozen=True)
class Repo:
    id: int
    type: str
    namespace: str
    name: str
    private: bool
    created_at: str
    updated_at: str

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.repo_id,
            "type": self.type,
            "private": self.private,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class CommitInfo:
    id: str
    parents: list[str]
    message: str
    author: str
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "commit": self.id,
            "parents": self.parents,
            "message": self.message,
            "author": self.author,
            "created_at": self.created_at,
        }


def pack_chunks(chunks: list[tuple[str, int]]) -> bytes:
    return b"".join(bytes.fromhex(d) + struct.pack("<I", n) for d, n in chunks)


def unpack_chunks(raw: bytes) -> list[tuple[str, int]]:
    return [(raw[i : i + 32].hex(), struct.unpack_from("<I", raw, i + 32)[0]) for i in range(0, len(raw), 36)]


def _batches(items: list[Any], size: int = _SQL_BATCH) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _content_key(entry: FileEntry) -> tuple[str, int, bytes]:
    return entry.sha256, entry.size, pack_chunks(entry.chunks)


def _digest_key(digest: FileDigest) -> tuple[str, int, bytes]:
    return digest.sha256, digest.size, pack_chunks([(c.digest.hex(), c.length) for c in digest.chunks])


def check_type(repo_type: str) -> str:
    if repo_type not in REPO_TYPES:
        raise ProtocolError(f"repository type must be one of {', '.join(REPO_TYPES)}, not {repo_type!r}")
    return repo_type


def check_ref_name(name: str, what: str = "branch") -> str:
    if (
        not name
        or len(name) > 200
        or name.startswith(("/", "-"))
        or ".." in name
        or any(ch in name for ch in " ~^:?*[\\\x7f")
        or any(ord(ch) < 32 for ch in name)
        or is_commit_id(name)
    ):
        raise ProtocolError(f"invalid {what} name {name!r}")
    return name


class Hub:
    """Reads and writes repositories; every method checks the caller's rights first."""

    def __init__(self, db: Database, store: ChunkStore) -> None:
        self.db = db
        self.store = store
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()
        self._manifest_lock = threading.Lock()
        self._zc = zstandard.ZstdCompressor(level=3)
        self.on_missing_repo = None  # set by the node to pull a repository through from upstream
        self._index_existing_commits()

    # -- repositories ----------------------------------------------------------------------------

    def _find(self, conn, repo_type: str, namespace: str, name: str) -> Repo | None:
        row = conn.execute(
            select(repos).where(
                (repos.c.type == repo_type) & (repos.c.namespace == namespace) & (repos.c.name == name)
            )
        ).first()
        return Repo(**row._mapping) if row else None

    def get_repo(self, caller: Identity, repo_type: str, repo_id: str, pull_through: bool = True) -> Repo:
        """The repository if it exists and the caller may see it; otherwise RepoNotFound (never 403)."""
        check_type(repo_type)
        namespace, name = split_repo_id(repo_id)
        with self.db.read() as conn:
            repo = self._find(conn, repo_type, namespace, name)
        if (
            repo is None
            and pull_through
            and self.on_missing_repo
            and self.on_missing_repo(repo_type, repo_id)
        ):
            return self.get_repo(caller, repo_type, repo_id, pull_through=False)
        if repo is None or (repo.private and not caller.can_read(namespace)):
            raise RepoNotFound(
                f"{repo_type} repository {repo_id!r} not found "
                "(or it is private and your token cannot read it)"
            )
        return repo

    def create_repo(
        self, caller: Identity, repo_type: str, repo_id: str, private: bool = False, exist_ok: bool = False
    ) -> tuple[Repo, bool]:
        """Create a repository in a namespace the caller may write; returns (repo, created)."""
        check_type(repo_type)
        namespace, name = split_repo_id(repo_id)
        caller.require_write(namespace)
        with self.db.write() as conn:
            existing = self._find(conn, repo_type, namespace, name)
            if existing is not None:
                if exist_ok:
                    return existing, False
                raise Conflict(f"{repo_type} repository {repo_id!r} already exists")
            check_namespace(namespace)
            return self._insert_repo(conn, repo_type, namespace, name, private), True

    def _insert_repo(self, conn, repo_type: str, namespace: str, name: str, private: bool) -> Repo:
        now = utc_now_iso()
        values = dict(
            type=repo_type, namespace=namespace, name=name, private=private, created_at=now, updated_at=now
        )
        conn.execute(repos.insert().values(**values))
        return self._find(conn, repo_type, namespace, name)  # type: ignore[return-value]

    def ensure_repo(self, repo_type: str, repo_id: str, private: bool = False) -> Repo:
        """Create a repository without an owner check: for the node's own work (seeding, mirroring,
        publishing paths under the reserved ``path/`` namespace)."""
        check_type(repo_type)
        namespace, name = split_repo_id(repo_id)
        with self.db.write() as conn:
            existing = self._find(conn, repo_type, namespace, name)
            return existing or self._insert_repo(conn, repo_type, namespace, name, private)

    def set_private(self, caller: Identity, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = self.get_repo(caller, repo_type, repo_id)
        caller.require_write(repo.namespace)
        with self.db.write() as conn:
            conn.execute(repos.update().where(repos.c.id == repo.id).values(private=private))
        return self.get_repo(caller, repo_type, repo_id)

    def list_repos(
        self,
        caller: Identity,
        repo_type: str | None = None,
        namespace: str | None = None,
        search: str | None = None,
    ) -> list[Repo]:
        query = select(repos).order_by(repos.c.type, repos.c.namespace, repos.c.name)
        if repo_type:
            query = query.where(repos.c.type == check_type(repo_type))
        if namespace:
            query = query.where(repos.c.namespace == namespace)
        with self.db.read() as conn:
            rows = [Repo(**r._mapping) for r in conn.execute(query)]
        found = [r for r in rows if not r.private or caller.can_read(r.namespace)]
        if search:
            needle = search.lower()
            found = [r for r in found if needle in r.repo_id.lower()]
        return found

    # -- refs and revisions ----------------------------------------------------------------------

    def refs(self, repo: Repo) -> dict[str, dict[str, str]]:
        with self.db.read() as conn:
            rows = conn.execute(select(refs).where(refs.c.repo_id == repo.id).order_by(refs.c.name)).all()
        out: dict[str, dict[str, str]] = {"branches": {}, "tags": {}}
        for row in rows:
            out["branches" if row.kind == "branch" else "tags"][row.name] = row.commit_id
        return out

    def head(self, repo: Repo, branch: str = DEFAULT_BRANCH) -> str | None:
        """The commit ``branch`` points at, or None for a branch that does not exist (an empty repository)."""
        with self.db.read() as conn:
            return self._head(conn, repo, branch)

    def _head(self, conn, repo: Repo, branch: str) -> str | None:
        row = conn.execute(
            select(refs.c.commit_id).where(
                (refs.c.repo_id == repo.id) & (refs.c.kind == "branch") & (refs.c.name == branch)
            )
        ).first()
        return row[0] if row else None

    def resolve(self, repo: Repo, revision: str | None) -> str:
        """Branch, tag or commit id of this repository -> commit id."""
        revision = revision or DEFAULT_BRANCH
        with self.db.read() as conn:
            if is_commit_id(revision):
                row = conn.execute(
                    select(commits.c.id).where((commits.c.id == revision) & (commits.c.repo_id == repo.id))
                ).first()
                if row:
                    return row[0]
            for kind in ("branch", "tag"):
                row = conn.execute(
                    select(refs.c.commit_id).where(
                        (refs.c.repo_id == repo.id) & (refs.c.kind == kind) & (refs.c.name == revision)
                    )
                ).first()
                if row:
                    return row[0]
        if revision == DEFAULT_BRANCH:
            raise RevisionNotFound(f"{repo.repo_id} has no commits yet: push something first")
        raise RevisionNotFound(f"revision {revision!r} is not a branch, tag or commit of {repo.repo_id}")

    def tag(
        self,
        caller: Identity,
        repo: Repo,
        revision: str,
        tag: str,
        force: bool = False,
        exist_ok: bool = True,
    ) -> str:
        """Point a new tag at ``revision``. Tags do not move (``force`` moves one); with ``exist_ok``
        False even a tag already at that commit is a Conflict, as the Hub answers ``create_tag``."""
        caller.require_write(repo.namespace)
        check_ref_name(tag, "tag")
        commit_id = self.resolve(repo, revision)
        with self.db.write() as conn:
            existing = conn.execute(
                select(refs.c.commit_id).where(
                    (refs.c.repo_id == repo.id) & (refs.c.kind == "tag") & (refs.c.name == tag)
                )
            ).first()
            if existing and not exist_ok and not force:
                raise Conflict(f"tag {tag!r} already exists in {repo.repo_id} (at {existing[0]})")
            if existing and existing[0] != commit_id and not force:
                raise Conflict(f"tag {tag!r} already points at {existing[0]}; tags do not move")
            if not existing:
                conn.execute(
                    refs.insert().values(
                        repo_id=repo.id, kind="tag", name=tag, commit_id=commit_id, updated_at=utc_now_iso()
                    )
                )
            elif force:
                conn.execute(
                    refs.update()
                    .where((refs.c.repo_id == repo.id) & (refs.c.kind == "tag") & (refs.c.name == tag))
                    .values(commit_id=commit_id, updated_at=utc_now_iso())
                )
        return commit_id

    def create_branch(self, caller: Identity, repo: Repo, branch: str, revision: str | None = None) -> str:
        """A new branch at ``revision`` (default: the head of main); Conflict if it exists already."""
        caller.require_write(repo.namespace)
        check_ref_name(branch)
        commit_id = self.resolve(repo, revision)
        with self.db.write() as conn:
            if self._head(conn, repo, branch) is not None:
                raise Conflict(f"branch {branch!r} already exists in {repo.repo_id}")
            conn.execute(
                refs.insert().values(
                    repo_id=repo.id, kind="branch", name=branch, commit_id=commit_id, updated_at=utc_now_iso()
                )
            )
        return commit_id

    def delete_ref(self, caller: Identity, repo: Repo, kind: str, name: str) -> str:
        """Remove a branch or tag (its commits stay reachable by id); the default branch stays, since
        every reader falls back to it. Returns the commit the ref pointed at."""
        caller.require_write(repo.namespace)
        if kind not in ("branch", "tag"):
            raise ProtocolError(f"ref kind must be branch or tag, not {kind!r}")
        if kind == "branch" and name == DEFAULT_BRANCH:
            raise ProtocolError(f"the default branch {DEFAULT_BRANCH!r} cannot be deleted")
        where = (refs.c.repo_id == repo.id) & (refs.c.kind == kind) & (refs.c.name == name)
        with self.db.write() as conn:
            row = conn.execute(select(refs.c.commit_id).where(where)).first()
            if row is None:
                raise RevisionNotFound(f"{kind} {name!r} does not exist in {repo.repo_id}")
            conn.execute(refs.delete().where(where))
        return row[0]

    def delete_repo(self, caller: Identity, repo_type: str, repo_id: str) -> None:
        """Delete a repository, its refs and commits. Chunks stay in the store (other repositories may
        share them) but stop being readable through this repository."""
        repo = self.get_repo(caller, repo_type, repo_id, pull_through=False)
        caller.require_write(repo.namespace)
        with self.db.write() as conn:
            conn.execute(refs.delete().where(refs.c.repo_id == repo.id))
            conn.execute(repo_chunks.delete().where(repo_chunks.c.repo_id == repo.id))
            conn.execute(commits.delete().where(commits.c.repo_id == repo.id))
            conn.execute(repos.delete().where(repos.c.id == repo.id))
        with self._manifest_lock:
            self._manifests.clear()

    def move_repo(self, caller: Identity, repo_type: str, from_id: str, to_id: str) -> Repo:
        """Rename a repository, possibly into another namespace: the caller must be able to write both.
        Commits keep their ids (they name the repository they were made in)."""
        repo = self.get_repo(caller, repo_type, from_id, pull_through=False)
        caller.require_write(repo.namespace)
        namespace, name = split_repo_id(to_id)
        caller.require_write(namespace)
        check_namespace(namespace)
        with self.db.write() as conn:
            if self._find(conn, repo_type, namespace, name) is not None:
                raise Conflict(f"{repo_type} repository {to_id!r} already exists")
            conn.execute(
                repos.update()
                .where(repos.c.id == repo.id)
                .values(namespace=namespace, name=name, updated_at=utc_now_iso())
            )
            moved = self._find(conn, repo_type, namespace, name)
        assert moved is not None
        return moved

    def heads(self, found: list[Repo], branch: str = DEFAULT_BRANCH) -> dict[int, tuple[str, dict[str, Any]]]:
        """repo id -> (head commit of ``branch``, its card) for the repositories that have one, in one
        query per batch (listings show hundreds of repositories)."""
        out: dict[int, tuple[str, dict[str, Any]]] = {}
        with self.db.read() as conn:
            for batch in _batches([r.id for r in found]):
                query = (
                    select(refs.c.repo_id, commits.c.id, commits.c.card)
                    .join(commits, commits.c.id == refs.c.commit_id)
                    .where(refs.c.repo_id.in_(batch) & (refs.c.kind == "branch") & (refs.c.name == branch))
                )
                for row in conn.execute(query):
                    out[row.repo_id] = (row.id, json.loads(row.card))
        return out

    # -- commits ---------------------------------------------------------------------------------

    def manifest(self, commit_id: str) -> Manifest:
        with self._manifest_lock:
            cached = self._manifests.get(commit_id)
            if cached is not None:
                self._manifests.move_to_end(commit_id)
                return cached
        with self.db.read() as conn:
            row = conn.execute(select(commits.c.manifest).where(commits.c.id == commit_id)).first()
        if row is None:
            raise RevisionNotFound(f"commit {commit_id} does not exist on this node")
        manifest = parse_manifest(zstandard.ZstdDecompressor().decompress(row[0]))
        with self._manifest_lock:
            self._manifests[commit_id] = manifest
            while len(self._manifests) > _MANIFEST_CACHE:
                self._manifests.popitem(last=False)
        return manifest

    def commit_info(self, commit_id: str) -> CommitInfo:
        with self.db.read() as conn:
            row = conn.execute(select(commits).where(commits.c.id == commit_id)).first()
        if row is None:
            raise RevisionNotFound(f"commit {commit_id} does not exist on this node")
        return CommitInfo(row.id, json.loads(row.parents), row.message, row.author, row.created_at)

    def card(self, commit_id: str) -> dict[str, Any]:
        with self.db.read() as conn:
            row = conn.execute(select(commits.c.card).where(commits.c.id == commit_id)).first()
        if row is None:
            raise RevisionNotFound(f"commit {commit_id} does not exist on this node")
        return json.loads(row[0])

    def log(self, repo: Repo, revision: str | None = None, limit: int = 100) -> list[CommitInfo]:
        """First-parent history from a revision, newest first."""
        out: list[CommitInfo] = []
        current: str | None = self.resolve(repo, revision)
        while current and len(out) < limit:
            try:
                info = self.commit_info(current)
            except RevisionNotFound:
                if not out:
                    raise
                break  # an imported commit's parents need not be on this node: history ends there
            out.append(info)
            current = info.parents[0] if info.parents else None
        return out

    # -- content trust ---------------------------------------------------------------------------

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
            for batch in _batches(list(dict.fromkeys(digests))):
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
                for batch in _batches(wanted):
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
                for batch in _batches(rows, 5000):
                    insert_ignore(conn, chunk_uploads, batch)

    def record_contents(self, digests: Iterable[FileDigest]) -> None:
        """Remember files whose SHA-256 the node computed itself (an ingest, a verified archive)."""
        rows = [self._content_row(*_digest_key(d)) for d in digests]
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
            insert_ignore(conn, contents, [self._content_row(*_digest_key(digest))])
            for batch in _batches(uploads if user else [], 5000):
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
        return self._verify_contents(files, {_digest_key(d) for d in ingested})

    def _verify_contents(
        self, files: list[FileEntry], computed: set[tuple[str, int, bytes]]
    ) -> list[dict[str, Any]]:
        """Check each file's size, chunk lengths and SHA-256 against its chunks' bytes, reading only
        files whose exact (hash, chunking) the node has not computed before."""
        todo = {_content_key(f): f for f in files}
        rows = [self._content_row(*key) for key in todo if key in computed]
        todo = {key: f for key, f in todo.items() if key not in computed}
        if todo:
            with self.db.read() as conn:
                for batch in _batches(sorted({key[0] for key in todo})):
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
                inherited = {_content_key(f) for f in self.manifest(manifest.parents[0]).files}
            except RevisionNotFound:
                pass  # an imported commit whose parent this node lacks: index everything
        digests = dict.fromkeys(
            d for f in manifest.files if _content_key(f) not in inherited for d in f.digests()
        )
        rows = [{"digest": d, "repo_id": repo.id} for d in digests]
        for batch in _batches(rows, 5000):
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
                for batch in _batches([{"digest": d, "repo_id": row.repo_id} for d in digests], 5000):
                    insert_ignore(conn, repo_chunks, batch)
            insert_ignore(conn, hub_meta, [{"key": "repo_chunks", "value": utc_now_iso()}])
        if ids:
            log.info("indexed the chunks of %d existing commits for read checks", len(ids))

    def _reader(self, entry: FileEntry) -> ChunkedFile:
        return ChunkedFile(self.store, [(bytes.fromhex(d), n) for d, n in entry.chunks])

    def derive_card(self, files: list[FileEntry], declared: dict[str, Any]) -> dict[str, Any]:
        """Card from the headers of the largest GGUF (else all safetensors shards) and config.json,
        plus the fields the author declared."""
        card: dict[str, Any] = {}
        by_path = {f.path: f for f in files}
        ggufs = sorted((f for f in files if f.path.endswith(".gguf") and f.size > 8), key=lambda f: -f.size)
        shards = [f for f in files if f.path.endswith(".safetensors") and f.size > 8]
        current = ""
        try:
            if ggufs:
                current = ggufs[0].path
                with self._reader(ggufs[0]).open() as handle:
                    card.update(cards.gguf_card(handle))
                card["weights_file"] = current
            elif shards:
                parts = []
                for shard in shards:
                    current = shard.path
                    with self._reader(shard).open() as handle:
                        parts.append(cards.safetensors_card(handle))
                card.update(parts[0])
                card["parameters"] = sum(p["parameters"] for p in parts)
                card["parameter_size"] = cards.size_label(card["parameters"])
                card["weights_file"] = shards[0].path
        except cards.HeaderError as exc:
            card["card_error"] = f"{current}: {exc}"
        if "config.json" in by_path and by_path["config.json"].size < 1_000_000:
            config = by_path["config.json"]
            raw = self._reader(config).read(0, config.size)
            for key, value in cards.config_card(raw).items():
                card.setdefault(key, value)
        readme = by_path.get("README.md")
        if readme is not None and 0 < readme.size <= MAX_FRONT_MATTER * 4:
            meta = readme_metadata(self._reader(readme).read(0, min(readme.size, MAX_FRONT_MATTER)))
            for key, value in meta.items():
                card.setdefault(key, value)
        for key in _CARD_KEYS_FROM_DECLARED:
            if declared.get(key) is not None and not card.get(key):
                card[key] = declared[key]
        card.setdefault("license", declared.get("license"))
        card["files"] = len(files)
        card["size"] = sum(f.size for f in files)
        if declared:
            card["declared"] = declared
        return card

    def commit(
        self,
        caller: Identity,
        repo_type: str,
        repo_id: str,
        files: list[FileEntry],
        *,
        branch: str = DEFAULT_BRANCH,
        expected_parent: str | None = None,
        check_parent: bool = False,
        message: str = "",
        card: dict[str, Any] | None = None,
        create: bool = True,
        private: bool = False,
    ) -> tuple[Manifest, Repo]:
        """Record a new commit on ``branch``; with ``check_parent`` the branch must still be at
        ``expected_parent`` (None = must not exist yet), else Conflict."""
        check_type(repo_type)
        check_ref_name(branch)
        check_file_list(files)
        namespace, _ = split_repo_id(repo_id)
        caller.require_write(namespace)
        if create:
            repo, _ = self.create_repo(caller, repo_type, repo_id, private=private, exist_ok=True)
        else:
            repo = self.get_repo(caller, repo_type, repo_id)
        proven = self._admit(caller, files)
        declared = dict(card or {})
        derived = self.derive_card(files, declared)
        with self.db.write() as conn:
            head = self._head(conn, repo, branch)
            if check_parent and head != expected_parent:
                raise Conflict(
                    f"branch {branch!r} of {repo_id} moved: expected parent {expected_parent or '(none)'}, "
                    f"it is now {head or '(none)'}. Pull, then push again.",
                    head=head,
                )
            if head is not None and self._unchanged(head, files, declared):
                return self.manifest(head), repo  # nothing changed: no empty commit
            manifest = Manifest(
                repo=repo_id,
                type=repo_type,  # type: ignore[arg-type]
                parents=[head] if head else [],
                message=message or f"Update {repo_id}",
                author=caller.name or "",
                created_at=utc_now_iso(),
                files=files,
                card=declared,
            )
            self._insert_commit(conn, repo, manifest, derived, proven)
            self._move_branch(conn, repo, branch, head, manifest.commit_id)
        forget_ingested()
        return manifest, repo

    def _unchanged(self, head: str, files: list[FileEntry], declared: dict[str, Any]) -> bool:
        current = self.manifest(head)
        same_files = sorted(current.files, key=lambda f: f.path) == sorted(files, key=lambda f: f.path)
        return same_files and (not declared or declared == current.card)

    def _insert_commit(
        self, conn, repo: Repo, manifest: Manifest, card: dict[str, Any], proven: list[dict[str, Any]]
    ) -> None:
        commit_id = manifest.commit_id
        insert_ignore(
            conn,
            commits,
            [
                {
                    "id": commit_id,
                    "repo_id": repo.id,
                    "manifest": self._zc.compress(manifest.canonical()),
                    "parents": json.dumps(manifest.parents),
                    "message": manifest.message,
                    "author": manifest.author,
                    "created_at": manifest.created_at,
                    "card": json.dumps(card),
                }
            ],
        )
        insert_ignore(conn, contents, list({row["sha256"]: row for row in proven}.values()))
        self._index_chunks(conn, repo, manifest)
        conn.execute(repos.update().where(repos.c.id == repo.id).values(updated_at=utc_now_iso()))

    def _move_branch(self, conn, repo: Repo, branch: str, old: str | None, new: str) -> None:
        now = utc_now_iso()
        if old is None:
            conn.execute(
                refs.insert().values(
                    repo_id=repo.id, kind="branch", name=branch, commit_id=new, updated_at=now
                )
            )
            return
        moved = conn.execute(
            refs.update()
            .where(
                (refs.c.repo_id == repo.id)
                & (refs.c.kind == "branch")
                & (refs.c.name == branch)
                & (refs.c.commit_id == old)
            )
            .values(commit_id=new, updated_at=now)
        )
        if moved.rowcount != 1:
            raise Conflict(f"branch {branch!r} of {repo.repo_id} moved during the commit; push again")

    # -- replication -----------------------------------------------------------------------------

    def import_commit(self, repo: Repo, raw_manifest: bytes, expected_id: str) -> Manifest:
        """Store a commit copied from another node, verbatim; its id must match its content."""
        manifest = parse_manifest(raw_manifest)
        if manifest.commit_id != expected_id:
            raise ProtocolError(
                f"manifest content hashes to {manifest.commit_id}, not {expected_id}: refusing it"
            )
        if manifest.repo != repo.repo_id or manifest.type != repo.type:
            raise ProtocolError(f"manifest belongs to {manifest.type} {manifest.repo}, not {repo.repo_id}")
        proven = self._admit(None, manifest.files)
        derived = self.derive_card(manifest.files, dict(manifest.card))
        with self.db.write() as conn:
            self._insert_commit(conn, repo, manifest, derived, proven)
        return manifest

    def has_commit(self, commit_id: str) -> bool:
        with self.db.read() as conn:
            return conn.execute(select(commits.c.id).where(commits.c.id == commit_id)).first() is not None

    def set_refs(self, repo: Repo, branches: dict[str, str], tags: dict[str, str]) -> None:
        """Make this repository's refs equal the given ones (mirrors follow their upstream)."""
        now = utc_now_iso()
        with self.db.write() as conn:
            conn.execute(refs.delete().where(refs.c.repo_id == repo.id))
            rows = [
                {"repo_id": repo.id, "kind": kind, "name": name, "commit_id": cid, "updated_at": now}
                for kind, group in (("branch", branches), ("tag", tags))
                for name, cid in group.items()
            ]
            if rows:
                conn.execute(refs.insert(), rows)

    def set_ref(self, repo: Repo, kind: str, name: str, commit_id: str, expected: str | None = None) -> None:
        """Point one branch or tag at a commit, leaving every other ref alone (archive imports); the
        ref must still be at ``expected`` (None = absent), else Conflict: no lost update."""
        if kind not in ("branch", "tag"):
            raise ProtocolError(f"ref kind must be branch or tag, not {kind!r}")
        check_ref_name(name, kind)
        where = (refs.c.repo_id == repo.id) & (refs.c.kind == kind) & (refs.c.name == name)
        with self.db.write() as conn:
            current = conn.execute(select(refs.c.commit_id).where(where)).first()
            if (current[0] if current else None) != expected:
                raise Conflict(f"{kind} {name!r} of {repo.repo_id} moved during the import; import again")
            if current is None:
                conn.execute(
                    refs.insert().values(
                        repo_id=repo.id, kind=kind, name=name, commit_id=commit_id, updated_at=utc_now_iso()
                    )
                )
            else:
                conn.execute(refs.update().where(where).values(commit_id=commit_id, updated_at=utc_now_iso()))

    def ensure_namespace_writable(self, caller: Identity, namespace: str) -> None:
        check_name(namespace, "namespace")
        if not caller.can_write(namespace):
            raise Forbidden(f"{caller.name!r} may not write to namespace {namespace!r}")
