"""Import: after ``check`` has accepted the whole archive, decide what each listed ref name will do
(a branch only moves forward, a tag never moves), then store the files' chunks, the commits (bases
first) and the refs. Any failed check leaves the node exactly as it was, and importing the same
archive twice is a no-op.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import Conflict, Forbidden, NotFound, ProtocolError
from ...protocol import split_repo_id
from ...store import ChunkStore, FileDigest
from ..accounts import Identity
from ..repos import Hub, Repo
from .check import ArchivedCommit, IndexEntry, check_layout, read_commit, verify_blobs
from .layout import MAX_ANCESTRY_WALK, Progress
from .read import Archive, Member

_NODE = Identity(name="(node)", is_admin=True)  # looks up repositories on the node's own behalf


@dataclass
class RefPlan:
    entry: IndexEntry
    status: str  # created | unchanged | moved | behind | skipped | none
    expected: str | None = None


def _check_rights(caller: Identity, entries: list[IndexEntry]) -> None:
    if caller.is_admin:
        caller.require_user()
        if caller.scope != "write":
            raise Forbidden("this token is read-only; importing needs a write token")
        return
    for namespace in sorted({split_repo_id(e.repo_id)[0] for e in entries}):
        caller.require_write(namespace)


def _is_ancestor(hub: Hub, archived: dict[str, ArchivedCommit], start: str, ancestor: str) -> bool:
    """Whether ``ancestor`` is in the history of ``start``, as far as this node and the archive know it."""
    queue, seen = [start], {start}
    while queue and len(seen) < MAX_ANCESTRY_WALK:
        current = queue.pop()
        if current == ancestor:
            return True
        if current in archived:
            parents = archived[current].manifest.parents
        elif hub.has_commit(current):
            parents = hub.commit_info(current).parents
        else:
            continue
        for parent in parents:
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return False


def plan_refs(hub: Hub, entries: list[IndexEntry], archived: dict[str, ArchivedCommit]) -> list[RefPlan]:
    """What each listed ref name will do. A branch moves only forward (an older commit is imported and
    the branch kept); a tag never moves. A ref that diverges is an error for what was exported, and
    is left alone for a base brought along."""
    plans = []
    for entry in entries:
        if entry.ref is None or entry.ref_kind is None:
            plans.append(RefPlan(entry, "none"))
            continue
        current = _current_ref(hub, entry)
        if current is None:
            plans.append(RefPlan(entry, "created"))
        elif current == entry.commit_id:
            plans.append(RefPlan(entry, "unchanged", current))
        elif entry.ref_kind == "branch" and _is_ancestor(hub, archived, entry.commit_id, current):
            plans.append(RefPlan(entry, "moved", current))
        elif entry.ref_kind == "branch" and _is_ancestor(hub, archived, current, entry.commit_id):
            plans.append(RefPlan(entry, "behind", current))  # an older snapshot: keep the newer head
        elif entry.role == "base":
            plans.append(RefPlan(entry, "skipped", current))
        else:
            raise Conflict(
                f"{entry.ref_kind} {entry.ref!r} of {entry.repo_id} is at {current} on this node, and "
                f"{entry.commit_id} does not descend from it; nothing was imported",
                head=current,
            )
    return plans


def _current_ref(hub: Hub, entry: IndexEntry) -> str | None:
    repo = _existing_repo(hub, entry.repo_type, entry.repo_id)
    if repo is None:
        return None
    refs = hub.refs(repo)
    return refs["branches" if entry.ref_kind == "branch" else "tags"].get(entry.ref or "")


def _existing_repo(hub: Hub, repo_type: str, repo_id: str) -> Repo | None:
    try:
        return hub.get_repo(_NODE, repo_type, repo_id, pull_through=False)
    except NotFound:
        return None


def store_files(
    store: ChunkStore, archive: Archive, blobs: dict[str, Member], digests: dict[str, FileDigest]
) -> int:
    """Store the verified chunks this node lacks, straight from the mapped archive; returns new bytes."""
    with store.writer() as writer:
        for hex_digest, digest in sorted(digests.items()):
            view = archive.bytes_of(blobs[hex_digest])
            for chunk in digest.chunks:
                writer.add(chunk.digest, view[chunk.offset : chunk.offset + chunk.length])
    return writer.new_bytes


def import_archive(
    hub: Hub, caller: Identity, path: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Check everything in the archive at ``path``, then store its files, commits and refs.
    Any failed check leaves the node exactly as it was; importing the same archive twice is a no-op."""
    started = time.perf_counter()
    with Archive(path) as archive:
        entries = check_layout(archive)
        blobs = archive.blobs()
        archived: dict[str, ArchivedCommit] = {}
        for entry in entries:
            known = archived.get(entry.commit_id)
            if known is None:
                archived[entry.commit_id] = read_commit(archive, blobs, entry)
            elif (known.manifest.type, known.manifest.repo) != (entry.repo_type, entry.repo_id):
                raise ProtocolError(f"index.json lists commit {entry.commit_id} under two repositories")
        _check_rights(caller, entries)
        files = {f.sha256: f for c in archived.values() for f in c.manifest.files}
        digests = verify_blobs(archive, blobs, files, progress)
        plans = plan_refs(hub, entries, archived)
        bytes_new = store_files(hub.store, archive, blobs, digests)
        hub.record_contents(digests.values())  # hashed above from the archive's bytes: no second pass
        fresh = _import_commits(hub, archived)
        for plan in plans:
            e = plan.entry
            if plan.status in ("created", "moved") and e.ref and e.ref_kind:
                repo = hub.ensure_repo(e.repo_type, e.repo_id)  # exists: its commit was just imported
                hub.set_ref(repo, e.ref_kind, e.ref, e.commit_id, plan.expected)
        return {
            "imported": [_row(p, p.entry.commit_id in fresh) for p in plans],
            "bytes": archive.size,
            "blobs": len(blobs),
            "bytes_new": bytes_new,
            "commits_new": len(fresh),
            "seconds": round(time.perf_counter() - started, 3),
        }


def _import_commits(hub: Hub, archived: dict[str, ArchivedCommit]) -> set[str]:
    fresh = set()
    for commit_id, commit in reversed(archived.items()):  # bases first, then what builds on them
        repo = hub.ensure_repo(commit.manifest.type, commit.manifest.repo, private=commit.private)
        if not hub.has_commit(commit_id):
            hub.import_commit(repo, commit.raw, commit_id)
            fresh.add(commit_id)
    return fresh


def _row(plan: RefPlan, new: bool) -> dict[str, Any]:
    e = plan.entry
    points = plan.status in ("created", "unchanged", "moved")  # the ref names this commit afterwards
    return {
        "repo": e.repo_id,
        "type": e.repo_type,
        "commit": e.commit_id,
        "ref": e.ref if points else None,
        "ref_kind": e.ref_kind if points else None,
        "ref_status": plan.status,
        "role": e.role,
        "new_commit": new,
    }
