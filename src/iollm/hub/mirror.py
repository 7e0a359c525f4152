"""Mirrors: copy a repository (all refs and their history) from another node, chunk by chunk.

Only chunks this node lacks are fetched; each is verified against its name before it is stored, and
each commit against its own hash, so a mirror holds exactly what the origin committed.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import IntegrityError, NotFound
from ..protocol import parse_manifest
from ..protocol.client import NodeClient
from ..store import ChunkStore, chunk_id
from .repos import Hub

FETCH_BATCH_BYTES = 16 * 1024 * 1024


def fetch_into_store(client: NodeClient, store: ChunkStore, wanted: list[tuple[bytes, int]]) -> int:
    """Fetch (digest, length) chunks from ``client`` into ``store``; returns bytes fetched."""
    fetched = 0
    batch: list[tuple[bytes, int]] = []

    def flush() -> None:
        nonlocal fetched, batch
        if not batch:
            return
        response = client.open_chunk_stream([d for d, _ in batch])
        try:
            body = response.read()
        finally:
            response.close()
        position = 0
        with store.writer() as writer:
            for digest, length in batch:
                data = memoryview(body)[position : position + length]
                if len(data) != length or chunk_id(data) != digest:
                    raise IntegrityError(f"{client.endpoint} sent a bad or short chunk {digest.hex()}")
                writer.add(digest, data)
                position += length
        fetched += position
        batch = []

    size = 0
    for digest, length in wanted:
        if size + length > FETCH_BATCH_BYTES:
            flush()
            size = 0
        batch.append((digest, length))
        size += length
    flush()
    return fetched


def mirror_repo(
    hub: Hub, upstream: str, repo_type: str, repo_id: str, token: str | None = None
) -> dict[str, Any]:
    """Replicate ``repo_id`` from the node at ``upstream``: every ref, every commit behind them."""
    started = time.perf_counter()
    with NodeClient(upstream, token) as client:
        info = client.repo_info(repo_type, repo_id)
        refs = client.refs(repo_type, repo_id)
        repo = hub.ensure_repo(repo_type, repo_id, private=bool(info.get("private")))
        order: list[str] = []
        seen: set[str] = set()
        for head in [*refs["branches"].values(), *refs["tags"].values()]:
            for commit in client.log(repo_type, repo_id, head, limit=1000):
                if commit["commit"] in seen or hub.has_commit(commit["commit"]):
                    break
                seen.add(commit["commit"])
                order.append(commit["commit"])
        bytes_fetched = 0
        for commit_id in reversed(order):  # oldest first, so parents land before children
            raw_id, raw = client.manifest_raw(repo_type, repo_id, commit_id)
            manifest = parse_manifest(raw)
            lengths = {bytes.fromhex(d): n for f in manifest.files for d, n in f.chunks}
            missing = hub.store.missing(list(lengths))
            bytes_fetched += fetch_into_store(client, hub.store, [(d, lengths[d]) for d in missing])
            hub.import_commit(repo, raw, raw_id)
        hub.set_refs(repo, refs["branches"], refs["tags"])
    return {
        "repo": repo_id,
        "type": repo_type,
        "upstream": upstream,
        "commits_copied": len(order),
        "bytes_fetched": bytes_fetched,
        "refs": refs,
        "seconds": round(time.perf_counter() - started, 3),
    }


class PullThrough:
    """Serves a repository this node lacks by mirroring it from the first upstream that has it."""

    def __init__(self, hub: Hub, upstreams: list[str]) -> None:
        self.hub = hub
        self.upstreams = upstreams

    def __call__(self, repo_type: str, repo_id: str) -> bool:
        for upstream in self.upstreams:
            try:
                mirror_repo(self.hub, upstream, repo_type, repo_id)
                return True
            except NotFound:
                continue
            except Exception:  # an upstream that is down must not break local reads
                continue
        return False
