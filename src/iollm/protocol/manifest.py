"""Manifests of protocol ``iollm/1``: what a commit contains, in canonical JSON, named by its hash.

A manifest lists every file of a commit with its size, SHA-256 and chunk list. Canonical JSON (sorted
keys, no spaces, UTF-8) makes the same content give the same commit id on every node, so a mirror can
check that what it copied is exactly what the origin committed.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

import blake3
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ProtocolError, UnsupportedProtocol

if TYPE_CHECKING:
    from ..store import FileDigest

PROTOCOL = "iollm/1"
SUPPORTED_PROTOCOLS = (PROTOCOL,)
REPO_TYPES = ("model", "dataset", "space")
RepoType = Literal["model", "dataset", "space"]

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_FILES = 100_000
MAX_PATH_LENGTH = 1024

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")


def canonical_json(value: Any) -> bytes:
    """The one byte encoding of a JSON value that every node agrees on."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def is_commit_id(value: str) -> bool:
    return bool(_COMMIT.match(value))


def check_protocol(version: str | None) -> None:
    """Refuse a protocol version this node does not speak, saying which ones it does."""
    if version not in SUPPORTED_PROTOCOLS:
        raise UnsupportedProtocol(
            f"protocol {version!r} is not supported; this node speaks {', '.join(SUPPORTED_PROTOCOLS)}. "
            "Upgrade the older side (client or node) so both speak a common version."
        )


def check_name(part: str, what: str) -> str:
    if not _NAME.match(part) or "--" in part or ".." in part:
        raise ProtocolError(
            f"invalid {what} {part!r}: use 1-96 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit, without '--' or '..'"
        )
    return part


def split_repo_id(repo_id: str) -> tuple[str, str]:
    """'namespace/name' -> (namespace, name), validated."""
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise ProtocolError(f"invalid repository id {repo_id!r}: expected 'namespace/name'")
    return check_name(parts[0], "namespace"), check_name(parts[1], "repository name")


def check_path(path: str) -> str:
    """A repository path: relative, POSIX, no '.'/'..' segments, no NUL or control characters."""
    if not path or len(path) > MAX_PATH_LENGTH:
        raise ProtocolError(f"invalid file path {path!r}: must be 1-{MAX_PATH_LENGTH} characters")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in path):
        raise ProtocolError(f"invalid file path {path!r}: contains NUL or control characters")
    if path.startswith("/") or "\\" in path or re.match(r"^[A-Za-z]:", path):
        raise ProtocolError(f"invalid file path {path!r}: must be relative and use '/' separators")
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        raise ProtocolError(f"invalid file path {path!r}: empty, '.' or '..' segments are not allowed")
    return path


class FileEntry(BaseModel):
    """One file of a commit. ``chunks`` is a list of [blake3 hex, length] in file order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int = Field(ge=0)
    sha256: str
    chunks: list[tuple[str, int]]

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not _HEX64.match(value):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return value

    @model_validator(mode="after")
    def _chunks_cover_file(self) -> FileEntry:
        total = 0
        for digest, length in self.chunks:
            if not _HEX64.match(digest) or length <= 0:
                raise ValueError(f"bad chunk [{digest!r}, {length}] in {self.path}")
            total += length
        if total != self.size:
            raise ValueError(f"chunks of {self.path} add up to {total} bytes, but the file has {self.size}")
        return self

    @classmethod
    def from_digest(cls, path: str, digest: FileDigest) -> FileEntry:
        """The entry for ``path`` holding the bytes the store cut and hashed into ``digest``."""
        return cls(
            path=path,
            size=digest.size,
            sha256=digest.sha256,
            chunks=[(c.digest.hex(), c.length) for c in digest.chunks],
        )

    def digests(self) -> list[bytes]:
        return [bytes.fromhex(d) for d, _ in self.chunks]


def check_file_list(files: list[FileEntry]) -> None:
    """A file tree, not just a list: at most MAX_FILES entries, no path twice, no path that is both a
    file and a folder (``a`` and ``a/b``). Checked before a commit is recorded, so a bad one is a 400."""
    if len(files) > MAX_FILES:
        raise ProtocolError(f"too many files ({len(files)} > {MAX_FILES})")
    paths = [f.path for f in files]
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise ProtocolError(f"the path {path!r} appears twice in the file list")
        seen.add(path)
    prefixes = {p.rsplit("/", i)[0] for p in paths for i in range(1, p.count("/") + 1)}
    clash = prefixes.intersection(paths)
    if clash:
        name = sorted(clash)[0]
        raise ProtocolError(f"{name!r} is both a file and a folder ({name!r} and {name + '/...'!r})")


class Manifest(BaseModel):
    """A commit: repository, parents, message, author, time, files and declared card metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: str = PROTOCOL
    repo: str
    type: RepoType = "model"
    parents: list[str] = Field(default_factory=list)
    message: str = ""
    author: str = ""
    created_at: str = ""
    files: list[FileEntry] = Field(default_factory=list)
    card: dict[str, Any] = Field(default_factory=dict)

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        check_protocol(value)
        return value

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        split_repo_id(value)
        return value

    @field_validator("parents")
    @classmethod
    def _parents(cls, value: list[str]) -> list[str]:
        for parent in value:
            if not is_commit_id(parent):
                raise ValueError(f"parent {parent!r} is not a 40-hex commit id")
        return value

    @field_validator("files")
    @classmethod
    def _files(cls, value: list[FileEntry]) -> list[FileEntry]:
        try:
            check_file_list(value)
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
        return sorted(value, key=lambda f: f.path)

    def canonical(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @property
    def commit_id(self) -> str:
        """First 160 bits of the BLAKE3 of the canonical manifest (40 hex, like a git commit)."""
        return blake3.blake3(self.canonical()).hexdigest()[:40]

    def file(self, path: str) -> FileEntry | None:
        for entry in self.files:
            if entry.path == path:
                return entry
        return None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def parse_manifest(raw: bytes | str | dict[str, Any]) -> Manifest:
    """Parse untrusted manifest bytes: size cap, protocol check first, then the schema."""
    if isinstance(raw, bytes | str):
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ProtocolError(f"manifest is {len(raw)} bytes; the limit is {MAX_MANIFEST_BYTES}")
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("manifest must be a JSON object")
    check_protocol(raw.get("protocol"))
    try:
        return Manifest.model_validate(raw)
    except ValueError as exc:
        raise ProtocolError(f"malformed manifest: {exc}") from exc
