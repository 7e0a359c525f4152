"""Manifests of protocol iollm/1: canonical ids and refusal of anything malformed."""

from __future__ import annotations

import json

import pytest

from iollm.protocol import (
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    ProtocolError,
    UnsupportedProtocol,
    check_path,
    parse_manifest,
)

CHUNK = "ab" * 32
SHA = "cd" * 32


def entry(path: str = "model.gguf", size: int = 10) -> dict:
    return {"path": path, "size": size, "sha256": SHA, "chunks": [[CHUNK, size]]}


def test_commit_id_is_canonical() -> None:
    a = parse_manifest({"protocol": "iollm/1", "repo": "a/b", "files": [entry("x"), entry("y")]})
    b = parse_manifest(json.dumps({"files": [entry("y"), entry("x")], "repo": "a/b", "protocol": "iollm/1"}))
    assert a.commit_id == b.commit_id and len(a.commit_id) == 40
    c = parse_manifest({"protocol": "iollm/1", "repo": "a/b", "files": [entry("x")], "message": "m"})
    assert c.commit_id != a.commit_id


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "/abs/path", "a/../b", "a\x00b", "a\\b", "", "a//b", "./a", "C:/x", "a/\n"],
)
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(ProtocolError):
        check_path(path)
    with pytest.raises(ProtocolError):
        parse_manifest({"protocol": "iollm/1", "repo": "a/b", "files": [entry(path)]})


def test_chunks_must_cover_the_file() -> None:
    bad = entry()
    bad["size"] = 11
    with pytest.raises(ProtocolError, match="add up"):
        parse_manifest({"protocol": "iollm/1", "repo": "a/b", "files": [bad]})


def test_unknown_protocol_is_refused_with_the_supported_ones() -> None:
    with pytest.raises(UnsupportedProtocol, match="iollm/1"):
        parse_manifest({"protocol": "iollm/99", "repo": "a/b", "files": []})


def test_malformed_and_oversized_manifests() -> None:
    with pytest.raises(ProtocolError, match="JSON"):
        parse_manifest(b"{not json")
    with pytest.raises(ProtocolError, match="limit"):
        parse_manifest(b" " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ProtocolError):
        parse_manifest({"protocol": "iollm/1", "repo": "a/b", "files": [entry("x"), entry("x")]})
    with pytest.raises(ProtocolError, match="file and a folder"):
        parse_manifest({"protocol": "iollm/1", "repo": "a/b", "files": [entry("x"), entry("x/y")]})
    with pytest.raises(ProtocolError):
        parse_manifest({"protocol": "iollm/1", "repo": "not-a-repo-id", "files": []})


def test_file_entry_round_trip() -> None:
    manifest = Manifest(repo="a/b", files=[FileEntry(**entry())])
    assert parse_manifest(manifest.canonical()).commit_id == manifest.commit_id
