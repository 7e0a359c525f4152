"""The archive's format, in one place: OCI media types and annotations, limits, and the deterministic
tar framing (fixed entry order, mtime 0, uid/gid 0, PAX) that makes the same commits give the same
archive bytes on every node. The writer (``export``) and the readers (``read``, ``check``) both
follow what is written here, so the two sides cannot drift apart.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from typing import Any

from ...protocol import FileEntry
from ..repos import Repo

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

Progress = Callable[[str, int, int], None]  # (phase, done, total) in bytes


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


def tar_trailer(body: int) -> bytes:
    """The two zero blocks that end a tar, padded to a whole record."""
    end = body + 2 * BLOCK
    return bytes(2 * BLOCK + (-end % RECORD))


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    """An OCI descriptor of in-memory bytes: media type, digest and size."""
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def layer(entry: FileEntry) -> dict[str, Any]:
    """The layer descriptor of one file: a weight file gets the CNCF ModelPack media type."""
    weight = entry.path.endswith(WEIGHT_SUFFIXES)
    annotations = {ANN_TITLE: entry.path, **({ANN_FILEPATH: entry.path} if weight else {})}
    return {
        "mediaType": MEDIA_WEIGHT if weight else MEDIA_FILE,
        "digest": "sha256:" + entry.sha256,
        "size": entry.size,
        "annotations": annotations,
    }


def repo_label(repo: Repo) -> str:
    """``type/namespace/name``, as the ``io.iollm.repo`` annotation writes it."""
    return f"{repo.type}/{repo.repo_id}"
