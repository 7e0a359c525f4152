"""What the Hugging Face compatible routes share: repository kinds and URL prefixes, which files the Hub
treats as LFS, git blob ids, and the tree entries listings and paths-info answer with."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections import OrderedDict
from typing import Any

from fastapi import Request

from ..errors import NotFound
from ..protocol import FileEntry
from ..store.reader import ChunkedFile
from .repos import Hub
from .xet import xet_store_of

PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_THRESHOLD = 10 * 1024 * 1024
BINARY_SUFFIXES = (
    ".gguf",
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".onnx",
    ".msgpack",
    ".npz",
    ".npy",
    ".parquet",
    ".arrow",
    ".zip",
    ".tar",
    ".gz",
    ".zst",
    ".xz",
    ".7z",
    ".png",
    ".jpg",
    ".jpeg",
    ".wav",
    ".mp3",
    ".mp4",
    ".pkl",
    ".tflite",
    ".model",
)
_git_oids: OrderedDict[str, str] = OrderedDict()


def hf_time(iso: str) -> str:
    """Our ISO times carry microseconds; huggingface_hub wants milliseconds and a Z."""
    return iso[:23] + "Z" if len(iso) >= 23 else iso


def is_lfs(path: str, size: int) -> bool:
    return size >= LFS_THRESHOLD or path.lower().endswith(BINARY_SUFFIXES)


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def git_oid(h: Hub, entry: FileEntry) -> str:
    """Git's blob id: of the bytes for regular files, of the LFS pointer for LFS files (as the Hub does)."""
    if is_lfs(entry.path, entry.size):
        return git_blob_oid(lfs_pointer(entry.sha256, entry.size))
    cached = _git_oids.get(entry.sha256)
    if cached is None:
        data = ChunkedFile(h.store, [(bytes.fromhex(d), n) for d, n in entry.chunks]).read(0, entry.size)
        cached = _git_oids[entry.sha256] = git_blob_oid(data)
        while len(_git_oids) > 4096:
            _git_oids.popitem(last=False)
    return cached


def raw_segments(request: Request, after: str) -> list[str]:
    """URL-decoded path segments that follow the literal segment ``after`` (a revision may hold %2F)."""
    raw = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
    parts = raw.split("/")
    index = parts.index(after, 5)  # after /api/{plural}/{ns}/{name}: a repository may be named "tree"
    return [urllib.parse.unquote(p) for p in parts[index + 1 :]]


def repo_type_of(plural: str) -> str:
    if plural not in PLURAL:
        raise NotFound(f"unknown repository kind {plural!r}: use models, datasets or spaces")
    return PLURAL[plural]


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def tree_entry(h: Hub, entry: FileEntry) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": git_oid(h, entry), "size": entry.size, "path": entry.path}
    if is_lfs(entry.path, entry.size):
        item["lfs"] = {
            "oid": entry.sha256,
            "size": entry.size,
            "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
        }
        xet_hash = xet_store_of(h).hash_for_sha256(entry.sha256)  # xet: files stored through Xet
        if xet_hash:
            item["xetHash"] = xet_hash
    return item


def folder_entry(commit_id: str, path: str) -> dict[str, Any]:
    oid = hashlib.sha1(f"tree:{commit_id}:{path}".encode(), usedforsecurity=False).hexdigest()
    return {"type": "directory", "oid": oid, "path": path}
