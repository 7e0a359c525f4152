"""Self-contained archives of commits as OCI image layouts: export on one node, import on another that
has no network (sneakernet, air-gapped sites; Ollama's long-standing "export/import" request).

An archive is a tar of an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``).
Each exported commit is one OCI image manifest whose config is the commit's canonical iollm manifest
(so the importer recomputes the commit id) and whose layers are the raw file bytes, named by the
SHA-256 the iollm manifest already records (CNCF ModelPack media type for weights). A commit that
builds on another one (an environment on its base model) brings that commit along.

The tar is deterministic (fixed entry order, mtime 0, uid/gid 0, PAX), so the same commits give the
same archive bytes on every node, and an import verifies every byte before it stores anything.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import queue
import re
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..protocol import (
    MAX_MANIFEST_BYTES,
    Conflict,
    FileEntry,
    Forbidden,
    IntegrityError,
    IollmError,
    Manifest,
    NotFound,
    ProtocolError,
    RevisionNotFound,
    Unavailable,
    canonical_json,
    error_from_json,
    is_commit_id,
    parse_manifest,
    split_repo_id,
)
from ..protocol.client import NodeClient
from ..store import ChunkStore, FileDigest, digest_buffer
from ..store.reader import ChunkedFile
from .accounts import Identity
from .names import check_namespace
from .repos import Hub, Repo, check_ref_name, check_type

LAYOUT_VERSION = "1.0.0"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.iollm.commit.v1+json"
MEDIA_CONFIG = "application/vnd.iollm.manifest.v1+json"
MEDIA_FILE = "application/vnd.iollm.file.v1"
MEDIA_WEIGHT = "application/vnd.cncf.model.weight.v1.raw"  # CNCF ModelPack: one raw weight file per layer
WEIGHT_SUFFIXES = (".gguf", ".safetensors")

ANN_TITLE = "org.opencontainers.image.title"
ANN_REF = "org.opencontainers.image.ref.name"
ANN_FILEPATH = "org.cncf.model.filepath"
ANN_REPO = "io.iollm.repo"  # type/namespace/name
ANN_COMMIT = "io.iollm.commit"
ANN_REF_KIND = "io.iollm.ref.kind"  # branch | tag
ANN_ROLE = "io.iollm.role"  # export: what was asked for; base: brought along because something builds on it
ANN_PRIVATE = "io.iollm.private"

ENVIRONMENT_FILE = "environment.json"
MAX_COMMITS = 1000
MAX_MEMBERS = 2_000_000
MAX_ANCESTRY_WALK = 10_000
BLOCK = 512
RECORD = 20 * BLOCK  # tar pads the archive to whole records, as tarfile and GNU tar do
STREAM_BLOCK = 4 << 20

_NODE = Identity(name="(node)", is_admin=True)  # looks up repositories on the node's own behalf
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_BLOB_NAME = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")

Progress = Callable[[str, int, int], None]


# -- export -----------------------------------------------------------------------------------------


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
        yield _trailer(self._body_size())

    def _body_size(self) -> int:
        return sum(
            len(tar_header(name, 0 if b is None else b.size, b is None))
            + (0 if b is None else b.size + (-b.size % BLOCK))
            for name, b in self.entries
        )


def tar_header(name: str, size: int, directory: bool = False) -> bytes:
    """One deterministic PAX header: no time, owner or host detail leaks into the archive."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _trailer(body: int) -> bytes:
    end = body + 2 * BLOCK
    return bytes(2 * BLOCK + (-end % RECORD))


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


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def _layer(entry: FileEntry) -> dict[str, Any]:
    weight = entry.path.endswith(WEIGHT_SUFFIXES)
    annotations = {ANN_TITLE: entry.path, **({ANN_FILEPATH: entry.path} if weight else {})}
    return {
        "mediaType": MEDIA_WEIGHT if weight else MEDIA_FILE,
        "digest": "sha256:" + entry.sha256,
        "size": entry.size,
        "annotations": annotations,
    }


def _repo_label(repo: Repo) -> str:
    return f"{repo.type}/{repo.repo_id}"


def oci_manifest(commit: ExportedCommit) -> tuple[bytes, bytes]:
    """(config, image manifest) bytes for one commit; both canonical JSON, hence stable digests."""
    config = commit.manifest.canonical()
    document = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": _descriptor(MEDIA_CONFIG, config),
        "layers": [_layer(f) for f in commit.manifest.files],
        "annotations": {ANN_REPO: _repo_label(commit.repo), ANN_COMMIT: commit.commit_id},
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
            ANN_REPO: _repo_label(commit.repo),
            ANN_COMMIT: commit.commit_id,
            ANN_ROLE: commit.role,
        }
        if commit.repo.private:
            annotations[ANN_PRIVATE] = "true"
        descriptor = {**_descriptor(MEDIA_MANIFEST, manifest), "artifactType": ARTIFACT_TYPE}
        for kind, name in commit.refs or ((None, None),):
            extra = {ANN_REF: name, ANN_REF_KIND: kind} if name else {}
            listed.append({**descriptor, "annotations": {**annotations, **extra}})
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
    plan.size = body + len(_trailer(body))
    return plan


# -- import: read and check the archive --------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """Where one file's bytes sit inside the tar (read in place: nothing is extracted)."""

    name: str
    offset: int
    size: int


@dataclass
class IndexEntry:
    """One line of index.json: a commit, and maybe a ref name for it."""

    digest: str
    size: int
    repo_type: str
    repo_id: str
    commit_id: str
    role: str
    private: bool
    ref: str | None
    ref_kind: str | None


@dataclass
class ArchivedCommit:
    """A commit as read from the archive, with its raw config bytes (imported verbatim)."""

    raw: bytes
    manifest: Manifest
    private: bool


def safe_member_name(raw: str) -> str:
    """A tar entry name as a plain relative path; anything that could land outside is refused."""
    name = raw[2:] if raw.startswith("./") else raw
    name = name.rstrip("/")
    parts = name.split("/")
    if (
        not name
        or raw.startswith("/")
        or re.match(r"^[A-Za-z]:", raw)
        or "\\" in raw
        or any(ord(ch) < 32 for ch in raw)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ProtocolError(
            f"archive entry {raw!r} is not a plain relative path (absolute, '..' or empty segments): "
            "refusing the archive; nothing was imported"
        )
    return name


def read_members(handle) -> dict[str, Member]:
    """The archive's files by name, after checking every entry; folders are accepted and skipped."""
    size = os.fstat(handle.fileno()).st_size
    found: dict[str, Member] = {}
    try:
        with tarfile.open(fileobj=handle, mode="r:") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    raise ProtocolError(f"archive has more than {MAX_MEMBERS} entries")
                if member.name in (".", "./") and member.isdir():
                    continue
                name = safe_member_name(member.name)
                if member.isdir():
                    continue
                if not member.isreg() or member.issparse():
                    raise ProtocolError(
                        f"archive entry {member.name!r} is a link or special file; an OCI layout holds "
                        "only files and folders. Nothing was imported."
                    )
                if name in found:
                    raise ProtocolError(f"archive entry {name!r} appears twice; refusing the ambiguity")
                if member.offset_data + member.size > size:
                    raise ProtocolError(f"archive is truncated: entry {name!r} ends past the end of the file")
                found[name] = Member(name, member.offset_data, member.size)
    except tarfile.TarError as exc:
        raise ProtocolError(f"not a tar archive (or a damaged one): {exc}") from exc
    return found


class Archive:
    """A received archive, memory-mapped: blobs are hashed and stored straight from the tar's pages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            self.members = read_members(self._handle)
            length = os.fstat(self._handle.fileno()).st_size
            self._map = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ) if length else None
        except BaseException:
            self._handle.close()
            raise
        self.view = memoryview(self._map) if self._map is not None else memoryview(b"")
        self.size = len(self.view)

    def close(self) -> None:
        try:
            self.view.release()
            if self._map is not None:
                self._map.close()
        except BufferError:
            pass  # a slice is still referenced (an error's traceback): the map is unmapped when it goes
        self._handle.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blobs(self) -> dict[str, Member]:
        return {m.group(1): member for name, member in self.members.items() if (m := _BLOB_NAME.match(name))}

    def bytes_of(self, member: Member) -> memoryview:
        return self.view[member.offset : member.offset + member.size]

    def json_file(self, name: str) -> Any:
        member = self.members.get(name)
        if member is None:
            raise ProtocolError(f"not an OCI image layout: the archive has no {name!r}")
        return _parse_json(bytes(self.bytes_of(member)), name, member.size)


def _parse_json(raw: bytes, what: str, size: int) -> Any:
    if size > MAX_MANIFEST_BYTES:
        raise ProtocolError(f"{what} is {size} bytes; the limit is {MAX_MANIFEST_BYTES}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from exc


def _digest_hex(value: Any, what: str) -> str:
    match = _DIGEST.match(value) if isinstance(value, str) else None
    if match is None:
        raise ProtocolError(f"{what}: digest {value!r} is not 'sha256:' and 64 lowercase hex digits")
    return match.group(1)


def _size(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{what}: size {value!r} is not a non-negative integer")
    return value


def check_layout(archive: Archive) -> list[IndexEntry]:
    """The layout version and index.json, as the entries this importer understands."""
    layout = archive.json_file("oci-layout")
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != LAYOUT_VERSION:
        raise ProtocolError(
            f"oci-layout says {layout!r}; this node reads imageLayoutVersion {LAYOUT_VERSION!r}"
        )
    index = archive.json_file("index.json")
    if not isinstance(index, dict) or index.get("schemaVersion") != 2:
        raise ProtocolError("index.json is not an OCI image index (schemaVersion 2)")
    listed = index.get("manifests")
    if not isinstance(listed, list) or not listed:
        raise ProtocolError("index.json lists no manifests: nothing to import")
    entries = [_index_entry(d, i) for i, d in enumerate(listed)]
    targets: dict[tuple[str, str, str | None, str | None], str] = {}
    for e in entries:
        if (
            e.ref is not None
            and targets.setdefault((e.repo_type, e.repo_id, e.ref_kind, e.ref), e.commit_id) != e.commit_id
        ):
            raise ProtocolError(f"index.json points {e.ref_kind} {e.ref!r} of {e.repo_id} at two commits")
    return entries


def _index_entry(descriptor: Any, position: int) -> IndexEntry:
    what = f"index.json manifests[{position}]"
    if not isinstance(descriptor, dict):
        raise ProtocolError(f"{what} is not an object")
    if descriptor.get("mediaType") != MEDIA_MANIFEST:
        raise ProtocolError(f"{what} has media type {descriptor.get('mediaType')!r}, not {MEDIA_MANIFEST}")
    notes = descriptor.get("annotations") or {}
    if not isinstance(notes, dict) or not notes.get(ANN_COMMIT) or not notes.get(ANN_REPO):
        raise ProtocolError(f"{what} has no {ANN_REPO} / {ANN_COMMIT} annotations: not an iollm archive")
    repo_type, _, repo_id = str(notes[ANN_REPO]).partition("/")
    check_type(repo_type)
    namespace, _ = split_repo_id(repo_id)
    check_namespace(namespace)
    commit_id = str(notes[ANN_COMMIT])
    if not is_commit_id(commit_id):
        raise ProtocolError(f"{what}: {ANN_COMMIT} {commit_id!r} is not a 40-hex commit id")
    ref = notes.get(ANN_REF)
    kind = notes.get(ANN_REF_KIND) or "branch"
    if ref is not None:
        if kind not in ("branch", "tag"):
            raise ProtocolError(f"{what}: {ANN_REF_KIND} must be branch or tag, not {kind!r}")
        check_ref_name(str(ref), kind)
    return IndexEntry(
        digest=_digest_hex(descriptor.get("digest"), what),
        size=_size(descriptor.get("size"), what),
        repo_type=repo_type,
        repo_id=repo_id,
        commit_id=commit_id,
        role=str(notes.get(ANN_ROLE) or "export"),
        private=notes.get(ANN_PRIVATE) == "true",
        ref=str(ref) if ref is not None else None,
        ref_kind=kind if ref is not None else None,
    )


def _blob(archive: Archive, blobs: dict[str, Member], digest: str, size: int, what: str) -> Member:
    member = blobs.get(digest)
    if member is None:
        raise ProtocolError(
            f"blob sha256:{digest} ({what}) is missing from the archive; nothing was imported"
        )
    if member.size != size:
        raise ProtocolError(
            f"blob sha256:{digest} ({what}) is {member.size} bytes, its descriptor says {size}"
        )
    return member


def _verified_json(archive: Archive, member: Member, what: str) -> tuple[bytes, Any]:
    raw = bytes(archive.bytes_of(member))
    actual = hashlib.sha256(raw).hexdigest()
    if actual != member.name.rsplit("/", 1)[-1]:
        raise IntegrityError(
            f"blob {member.name} ({what}) does not match its digest (its bytes hash to sha256:{actual}); "
            "the archive is damaged or was tampered with. Nothing was imported."
        )
    return raw, _parse_json(raw, what, member.size)


def read_commit(archive: Archive, blobs: dict[str, Member], entry: IndexEntry) -> ArchivedCommit:
    """One image manifest and its config: the commit id, repo, files and sizes must all agree."""
    what = f"manifest of {entry.repo_type}/{entry.repo_id}@{entry.commit_id[:12]}"
    _, document = _verified_json(archive, _blob(archive, blobs, entry.digest, entry.size, what), what)
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        raise ProtocolError(f"{what} is not an OCI image manifest (schemaVersion 2)")
    config = document.get("config")
    if not isinstance(config, dict) or config.get("mediaType") != MEDIA_CONFIG:
        raise ProtocolError(f"{what}: config is not an iollm manifest ({MEDIA_CONFIG})")
    config_member = _blob(
        archive,
        blobs,
        _digest_hex(config.get("digest"), what),
        _size(config.get("size"), what),
        what + " config",
    )
    raw, _ = _verified_json(archive, config_member, what + " config")
    manifest = parse_manifest(raw)
    if manifest.commit_id != entry.commit_id:
        raise IntegrityError(
            f"{what}: the manifest hashes to commit {manifest.commit_id}, not {entry.commit_id}; "
            "nothing was imported"
        )
    if manifest.repo != entry.repo_id or manifest.type != entry.repo_type:
        raise ProtocolError(f"{what}: the manifest belongs to {manifest.type}/{manifest.repo}")
    notes = document.get("annotations") or {}
    if isinstance(notes, dict) and notes.get(ANN_COMMIT) not in (None, entry.commit_id):
        raise ProtocolError(f"{what}: its own {ANN_COMMIT} annotation says {notes.get(ANN_COMMIT)}")
    _check_layers(archive, blobs, document.get("layers"), manifest, what)
    return ArchivedCommit(raw, manifest, entry.private)


def _check_layers(
    archive: Archive, blobs: dict[str, Member], layers: Any, manifest: Manifest, what: str
) -> None:
    if not isinstance(layers, list) or len(layers) != len(manifest.files):
        raise ProtocolError(f"{what}: {len(manifest.files)} files but the layers list does not match")
    for layer, entry in zip(layers, manifest.files, strict=True):
        where = f"{what}, file {entry.path!r}"
        if not isinstance(layer, dict):
            raise ProtocolError(f"{where}: layer is not an object")
        if _digest_hex(layer.get("digest"), where) != entry.sha256 or layer.get("size") != entry.size:
            raise IntegrityError(f"{where}: layer digest or size differs from the file's sha256 and size")
        title = (layer.get("annotations") or {}).get(ANN_TITLE)
        if title not in (None, entry.path):
            raise ProtocolError(f"{where}: layer is titled {title!r}")
        _blob(archive, blobs, entry.sha256, entry.size, where)


def verify_blobs(
    archive: Archive, blobs: dict[str, Member], files: dict[str, FileEntry], progress: Progress | None = None
) -> dict[str, FileDigest]:
    """Hash every blob; a file blob is also cut into chunks, which must equal its manifest entry's.
    Returns the chunking of each file blob, so storing it needs no second hashing pass."""
    total = sum(m.size for m in blobs.values())
    done = 0
    digests: dict[str, FileDigest] = {}
    for hex_digest, member in sorted(blobs.items()):
        view = archive.bytes_of(member)
        if hex_digest in files:
            digest = digest_buffer(view)
            actual = digest.sha256
        else:
            digest, actual = None, hashlib.sha256(view).hexdigest()
        if actual != hex_digest:
            raise IntegrityError(
                f"blob {member.name} does not match its digest (its bytes hash to sha256:{actual}); the "
                "archive is damaged or was tampered with. Nothing was imported.",
                blob=hex_digest,
            )
        if digest is not None:
            expected = [(bytes.fromhex(d), n) for d, n in files[hex_digest].chunks]
            if digest.chunk_list() != expected:
                raise IntegrityError(f"blob {member.name}: its chunks differ from the manifest's chunk list")
            digests[hex_digest] = digest
        done += member.size
        if progress:
            progress("verifying", done, total)
    return digests


# -- import: decide, then write ----------------------------------------------------------------------


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


# -- client side ---------------------------------------------------------------------------------------


def list_archive(path: Path) -> list[dict[str, Any]]:
    """The commits and refs an archive holds (read from its index.json; blobs are not checked)."""
    with Archive(path) as archive:
        return [
            {
                "repo": e.repo_id,
                "type": e.repo_type,
                "commit": e.commit_id,
                "ref": e.ref,
                "ref_kind": e.ref_kind,
            }
            for e in check_layout(archive)
        ]


@contextmanager
def _transport(client: NodeClient) -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        raise Unavailable(
            f"lost the connection to {client.endpoint} ({exc.__class__.__name__}); nothing was written"
        ) from exc


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = {"error": {"message": f"HTTP {response.status_code}"}}
    raise error_from_json(response.status_code, body)


class _HashingWriter:
    """Writes and hashes on a background thread, so the network, the disk and SHA-256 overlap."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._file.write(piece)
                    self.sha.update(piece)
                except BaseException as exc:  # surfaced on the next write or on close
                    self._error = exc

    def write(self, piece: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(piece)

    def close(self, sync: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            if sync:
                self._file.flush()
                os.fsync(self._file.fileno())
        finally:
            self._file.close()


def download_export(
    client: NodeClient,
    repo_type: str,
    repo_id: str,
    revision: str,
    dest: Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the node's archive of REPO@REVISION to ``dest`` atomically (temp file, then rename)."""
    started = time.perf_counter()
    dest = dest.expanduser().absolute()
    partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    received = 0
    try:
        writer = _HashingWriter(partial)
        try:
            with (
                _transport(client),
                client.http.stream(
                    "GET",
                    f"/api/export/{repo_type}/{repo_id}",
                    params={"revision": revision},
                    timeout=httpx.Timeout(60.0, connect=10.0, read=600.0),
                ) as response,
            ):
                _raise_for(response)
                expected = int(response.headers.get("content-length") or -1)
                for piece in response.iter_raw(1 << 20):
                    writer.write(piece)
                    received += len(piece)
                    if progress:
                        progress("exporting", received, max(expected, received))
        finally:
            writer.close()
        if expected >= 0 and received != expected:
            raise IollmError(
                f"the node sent {received} of {expected} bytes (damaged store?); nothing was written"
            )
        commits = list_archive(partial)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return {
        "path": str(dest),
        "bytes": received,
        "sha256": writer.sha.hexdigest(),
        "commits": commits,
        "seconds": round(time.perf_counter() - started, 3),
    }


def upload_import(client: NodeClient, path: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Send an archive to the node, streamed from disk; the node verifies it before storing anything."""
    size = path.stat().st_size

    def body() -> Iterator[bytes]:
        sent = 0
        with open(path, "rb") as handle:
            while piece := handle.read(STREAM_BLOCK):
                sent += len(piece)
                if progress:
                    progress("uploading", sent, size)
                yield piece

    started = time.perf_counter()
    with _transport(client):
        response = client.http.post(
            "/api/import",
            content=body(),
            headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
            timeout=httpx.Timeout(60.0, connect=10.0, read=None),
        )
    _raise_for(response)
    reply = response.json()
    return {
        **reply,
        "path": str(path),
        "server_seconds": reply.get("seconds"),
        "seconds": round(time.perf_counter() - started, 3),
    }
