"""Reading a received archive without extracting it: every tar entry is checked to be a plain file or
folder with a safe relative name, then the tar is memory-mapped so blobs are hashed and stored
straight from its pages. Nothing here trusts the archive's contents; ``check`` does that.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ProtocolError
from ...protocol import MAX_MANIFEST_BYTES
from .layout import MAX_MEMBERS

_BLOB_NAME = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")


@dataclass(frozen=True)
class Member:
    """Where one file's bytes sit inside the tar (read in place: nothing is extracted)."""

    name: str
    offset: int
    size: int


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
        return parse_json(bytes(self.bytes_of(member)), name, member.size)


def parse_json(raw: bytes, what: str, size: int) -> Any:
    """A JSON document of the archive, refused if too large or not JSON."""
    if size > MAX_MANIFEST_BYTES:
        raise ProtocolError(f"{what} is {size} bytes; the limit is {MAX_MANIFEST_BYTES}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from exc
