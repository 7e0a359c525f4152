"""Repositories, commits and refs: the Model Network Layer's source of truth.

A commit becomes visible only when its branch ref moves, in one transaction, from the parent the
writer expected to the new commit (compare-and-swap). Of two racing pushes one wins and the other gets
a conflict; a writer killed at any point leaves only unreferenced chunks, which the next push reuses.

Content trust (who may name, fetch or reuse which chunks, and file hashes the node computes itself) is
``content_trust.ContentTrust``, which the hub is.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import zstandard
from sqlalchemy import select

from ..database import Database, insert_ignore, utc_now_iso
from ..errors import (
    Conflict,
    Forbidden,
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
from ..store import ChunkStore, forget_ingested
from . import cards
from .accounts import Identity
from .content_trust import ContentTrust, batches
from .names import check_namespace
from .tables import commits, contents, refs, repo_chunks, repos

DEFAULT_BRANCH = "main"
_MANIFEST_CACHE = 64
log = logging.getLogger("iollm.hub")


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


class Hub(ContentTrust):
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
            for batch in batches([r.id for r in found]):
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
        derived = cards.derive_card(self.store, files, declared)
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
        derived = cards.derive_card(self.store, manifest.files, dict(manifest.card))
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
