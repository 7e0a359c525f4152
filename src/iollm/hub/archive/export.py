"""Export: what an archive of REPO@REVISION holds (that commit and, recursively, every commit it
builds on), planned in full before the first byte is sent so the response can state its size, then
streamed as a tar whose file bytes come straight from the chunk store.

Each commit is one OCI image manifest whose config is the commit's canonical iollm manifest (so the
importer recomputes the commit id) and whose layers are the raw file bytes, named by the SHA-256 the
iollm manifest already records.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ...errors import NotFound, ProtocolError, RevisionNotFound
from ...protocol import FileEntry, Manifest, canonical_json, is_commit_id
from ...store import ChunkStore
from ...store.reader import ChunkedFile
from ..accounts import Identity
from ..repos import Hub, Repo, check_type
from .layout import (
    ANN_COMMIT,
    ANN_PRIVATE,
    ANN_REF,
    ANN_REF_KIND,
    ANN_REPO,
    ANN_ROLE,
    ARTIFACT_TYPE,
    BLOCK,
    ENVIRONMENT_FILE,
    LAYOUT_VERSION,
    MAX_COMMITS,
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    STREAM_BLOCK,
    descriptor,
    layer,
    repo_label,
    tar_header,
    tar_trailer,
)


@dataclass(frozen=True)
class ExportedCommit:
    """One commit in an archive and the ref names it is listed under."""

    repo: Repo
    commit_id: str
    manifest: Manifest
    role: str
    refs: tuple[tuple[str, str], ...]  # (kind, name)


@dataclass(frozen=True)
class Blob:
    """Bytes named by their SHA-256: small JSON documents in memory, files read from the chunk store."""

    hex: str
    size: int
    data: bytes | None = None
    entry: FileEntry | None = None


@dataclass
class ExportPlan:
    """Everything an archive will contain, known before the first byte is sent (so its size is too)."""

    commits: list[ExportedCommit]
    blobs: dict[str, Blob]
    index: bytes
    entries: list[tuple[str, Blob | None]] = field(default_factory=list)  # tar order; None = folder
    size: int = 0

    @property
    def root(self) -> ExportedCommit:
        return self.commits[0]

    def filename(self) -> str:
        ref = self.root.refs[0][1] if self.root.refs else self.root.commit_id[:12]
        raw = f"{self.root.repo.namespace}-{self.root.repo.name}-{ref}.tar"
        return re.sub(r"[^A-Za-z0-9._-]", "_", raw)

    def stream(self, store: ChunkStore) -> Iterator[bytes]:
        """The tar, in about 4 MiB pieces; file bytes come from the store, chunk by verified chunk."""
        return _coalesce(self._pieces(store))

    def _pieces(self, store: ChunkStore) -> Iterator[bytes]:
        for name, blob in self.entries:
            yield tar_header(name, 0 if blob is None else blob.size, directory=blob is None)
            if blob is None:
                continue
            if blob.data is not None:
                yield blob.data
            elif blob.entry is not None:
                yield from _reader(store, blob.entry).iter_range(block=STREAM_BLOCK)
            yield bytes(-blob.size % BLOCK)
        yield tar_trailer(self._body_size())

    def _body_size(self) -> int:
        return sum(
            len(tar_header(name, 0 if b is None else b.size, b is None))
            + (0 if b is None else b.size + (-b.size % BLOCK))
            for name, b in self.entries
        )


def _coalesce(pieces: Iterable[bytes], block: int = STREAM_BLOCK) -> Iterator[bytes]:
    """Join small pieces (headers, padding, JSON) so the socket sees few large writes."""
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) >= block:  # file bytes: pass through without copying
            if pending:
                yield b"".join(pending)
                pending, size = [], 0
            yield piece
            continue
        pending.append(piece)
        size += len(piece)
        if size >= block:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _reader(store: ChunkStore, entry: FileEntry) -> ChunkedFile:
    return ChunkedFile(store, [(bytes.fromhex(d), n) for d, n in entry.chunks])


def plan_export(hub: Hub, caller: Identity, repo_type: str, repo_id: str, revision: str | None) -> ExportPlan:
    """What exporting REPO@REVISION writes: that commit, then every commit it builds on, recursively."""
    revision = revision or "main"
    repo = hub.get_repo(caller, repo_type, repo_id)
    commit_id = hub.resolve(repo, revision)
    refs = hub.refs(repo)
    if revision == commit_id:
        named: tuple[tuple[str, str], ...] = ()
    elif revision in refs["branches"]:
        named = (("branch", revision),)
    else:
        named = (("tag", revision),)
    root = ExportedCommit(repo, commit_id, hub.manifest(commit_id), "export", named)
    return build_plan(_with_bases(hub, caller, root))


def base_references(hub: Hub, manifest: Manifest) -> list[tuple[str, str, str]]:
    """(type, repo, commit) this commit builds on: the card's ``base_model``/``base_commit`` and an
    environment's ``environment.json`` ``base``. A base named without a commit is lineage, not a
    dependency, and is not followed."""
    found: list[tuple[str, str, str]] = []
    card = manifest.card
    if card.get("base_model") and is_commit_id(str(card.get("base_commit") or "")):
        found.append(
            (str(card.get("base_type") or "model"), str(card["base_model"]), str(card["base_commit"]))
        )
    env = _environment(hub, manifest)
    base = env.get("base") if isinstance(env, dict) else None
    if isinstance(base, dict) and base.get("repo") and is_commit_id(str(base.get("commit") or "")):
        found.append((str(base.get("type") or "model"), str(base["repo"]), str(base["commit"])))
    return list(dict.fromkeys(found))


def _environment(hub: Hub, manifest: Manifest) -> Any:
    entry = manifest.file(ENVIRONMENT_FILE)
    if entry is None or entry.size > 1_000_000:
        return None
    try:
        return json.loads(_reader(hub.store, entry).read(0, entry.size))
    except (ValueError, UnicodeDecodeError):
        return None  # not ours to judge: the runtime reports a broken environment when it loads it


def _with_bases(hub: Hub, caller: Identity, root: ExportedCommit) -> list[ExportedCommit]:
    """The root, then its bases depth first; each commit once, so a cycle cannot loop."""
    out: list[ExportedCommit] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if item.commit_id in seen:
            continue
        if len(out) >= MAX_COMMITS:
            raise ProtocolError(f"more than {MAX_COMMITS} commits to export; the base chain is too long")
        seen.add(item.commit_id)
        out.append(item)
        for ref in reversed(base_references(hub, item.manifest)):
            stack.append(_base_commit(hub, caller, item, *ref))
    return out


def _base_commit(
    hub: Hub, caller: Identity, child: ExportedCommit, repo_type: str, repo_id: str, commit_id: str
) -> ExportedCommit:
    what = f"{child.repo.repo_id}@{child.commit_id[:12]} builds on {repo_type} {repo_id}@{commit_id[:12]}"
    try:
        repo = hub.get_repo(caller, check_type(repo_type), repo_id)
        hub.resolve(repo, commit_id)
    except (NotFound, ProtocolError) as exc:
        raise RevisionNotFound(
            f"{what}, which is not on this node ({exc.message}): pull or mirror it here, then export again"
        ) from exc
    refs = hub.refs(repo)
    named = tuple(
        (kind, name)
        for kind, group in (("branch", refs["branches"]), ("tag", refs["tags"]))
        for name, target in sorted(group.items())
        if target == commit_id
    )
    return ExportedCommit(repo, commit_id, hub.manifest(commit_id), "base", named)


def oci_manifest(commit: ExportedCommit) -> tuple[bytes, bytes]:
    """(config, image manifest) bytes for one commit; both canonical JSON, hence stable digests."""
    config = commit.manifest.canonical()
    document = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(MEDIA_CONFIG, config),
        "layers": [layer(f) for f in commit.manifest.files],
        "annotations": {ANN_REPO: repo_label(commit.repo), ANN_COMMIT: commit.commit_id},
    }
    return config, canonical_json(document)


def build_plan(commits: list[ExportedCommit]) -> ExportPlan:
    """Blobs by digest (a file shared by several commits or paths is stored once) and the index."""
    blobs: dict[str, Blob] = {}
    listed: list[dict[str, Any]] = []
    for commit in commits:
        config, manifest = oci_manifest(commit)
        for data in (config, manifest):
            digest = hashlib.sha256(data).hexdigest()
            blobs.setdefault(digest, Blob(digest, len(data), data=data))
        for entry in commit.manifest.files:
            blobs.setdefault(entry.sha256, Blob(entry.sha256, entry.size, entry=entry))
        annotations = {
            ANN_REPO: repo_label(commit.repo),
            ANN_COMMIT: commit.commit_id,
            ANN_ROLE: commit.role,
        }
        if commit.repo.private:
            annotations[ANN_PRIVATE] = "true"
        listed_as = {**descriptor(MEDIA_MANIFEST, manifest), "artifactType": ARTIFACT_TYPE}
        for kind, name in commit.refs or ((None, None),):
            extra = {ANN_REF: name, ANN_REF_KIND: kind} if name else {}
            listed.append({**listed_as, "annotations": {**annotations, **extra}})
    index = canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": listed})
    layout = canonical_json({"imageLayoutVersion": LAYOUT_VERSION})
    entries: list[tuple[str, Blob | None]] = [
        ("oci-layout", Blob("", len(layout), data=layout)),
        ("index.json", Blob("", len(index), data=index)),
        ("blobs", None),
        ("blobs/sha256", None),
        *((f"blobs/sha256/{digest}", blobs[digest]) for digest in sorted(blobs)),
    ]
    plan = ExportPlan(commits, blobs, index, entries)
    body = plan._body_size()
    plan.size = body + len(tar_trailer(body))
    return plan
