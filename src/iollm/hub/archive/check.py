"""Checking an archive's contents before anything is stored: the layout version, index.json, each
commit's image manifest and config (which must hash to the commit id it is listed under), each
layer against the file it stands for, and finally every blob's bytes against its digest.
Any failure refuses the whole archive.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import IntegrityError, ProtocolError
from ...protocol import FileEntry, Manifest, is_commit_id, parse_manifest, split_repo_id
from ...store import FileDigest, digest_buffer
from ..names import check_namespace
from ..repos import check_ref_name, check_type
from .layout import (
    ANN_COMMIT,
    ANN_PRIVATE,
    ANN_REF,
    ANN_REF_KIND,
    ANN_REPO,
    ANN_ROLE,
    ANN_TITLE,
    LAYOUT_VERSION,
    MEDIA_CONFIG,
    MEDIA_MANIFEST,
    Progress,
)
from .read import Archive, Member, parse_json

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


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
    return raw, parse_json(raw, what, member.size)


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
