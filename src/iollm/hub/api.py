"""The node's native hub API (protocol ``iollm/1``): chunks, repositories, commits, refs, accounts."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import Forbidden, IntegrityError, MissingChunks, PayloadTooLarge, ProtocolError
from ..protocol import PROTOCOL, SUPPORTED_PROTOCOLS, FileEntry, check_protocol
from ..protocol.client import FRAME_HEADER
from ..protocol.server import Model, parse_json_body, validate_body
from ..store import CHUNKING_SPEC, ChunkCorrupt, ChunkMissing, ChunkStore, chunk_id
from ..store.reader import ChunkedFile
from .accounts import Accounts, Identity
from .deps import accounts, caller, hub
from .mirror import mirror_repo
from .repos import Hub, Repo

MAX_CHUNKS_PER_REQUEST = 100_000

router = APIRouter(prefix="/api")
log = logging.getLogger("iollm.hub")


def _json_body(model: type[Model], raw: bytes) -> Model:
    data = parse_json_body(raw)
    if isinstance(data, dict) and "protocol" in data:
        check_protocol(data["protocol"])
    return validate_body(model, data)


# -- node --------------------------------------------------------------------------------------


@router.get("/protocol")
def protocol_info(request: Request) -> dict[str, Any]:
    limits = request.app.state.body_limits  # node.limits.BodyLimits (size and depth of request bodies)
    return {
        "versions": list(SUPPORTED_PROTOCOLS),
        "current": PROTOCOL,
        "chunking": CHUNKING_SPEC,
        "commit_id": "first 40 hex digits of blake3(canonical manifest JSON)",
        "limits": {
            "upload_bytes": limits.upload,
            "chunks_per_request": MAX_CHUNKS_PER_REQUEST,
            "body_bytes": limits.body,
            "manifest_bytes": limits.manifest,
            "json_depth": limits.depth,
        },
        "node": request.app.state.node_info,
    }


@router.get("/whoami")
def whoami(who: Identity = Depends(caller)) -> dict[str, Any]:
    who.require_user()
    return {"name": who.name, "is_admin": who.is_admin, "scope": who.scope, "orgs": who.orgs}


# -- chunks ------------------------------------------------------------------------------------


class ChunkList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    protocol: str = PROTOCOL
    chunks: list[str] = Field(max_length=MAX_CHUNKS_PER_REQUEST)


def _digests(hexes: list[str]) -> list[bytes]:
    try:
        digests = [bytes.fromhex(h) for h in hexes]
    except ValueError as exc:
        raise ProtocolError("chunk ids must be 64 hex digits") from exc
    if any(len(d) != 32 for d in digests):
        raise ProtocolError("chunk ids must be 64 hex digits (32-byte BLAKE3)")
    return digests


@router.post("/chunks/missing")
async def chunks_missing(request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)) -> dict:
    """Which chunks the caller must upload: those the node lacks, and those it holds that the caller
    neither sent nor can read in a repository (the two answers look alike: no existence oracle)."""
    body = _json_body(ChunkList, await request.body())
    who.require_user()
    missing = await run_in_threadpool(h.missing_for, who, _digests(body.chunks))
    return {"missing": [d.hex() for d in missing]}


def _store_frames(h: Hub, user: str, raw: bytes) -> dict[str, int]:
    """Parse digest+length frames, verify every chunk, store those that are new; all or nothing.
    The caller is recorded as holding every chunk it sent (before the store write, so a node killed
    in between never stores chunks their sender has no right to). The answer is the same whether a
    chunk was new or not: an upload tells nothing about what others stored."""
    view = memoryview(raw)
    frames: list[tuple[bytes, memoryview]] = []
    position = 0
    while position < len(view):
        if len(view) - position < FRAME_HEADER.size:
            raise ProtocolError("upload body ends inside a frame header")
        digest, length = FRAME_HEADER.unpack_from(view, position)
        position += FRAME_HEADER.size
        if length == 0 or length > 16 * 1024 * 1024 or position + length > len(view):
            raise ProtocolError(f"bad frame length {length} for chunk {digest.hex()}")
        data = view[position : position + length]
        if chunk_id(data) != digest:
            raise IntegrityError(
                f"chunk {digest.hex()}: bytes do not match its BLAKE3 name; nothing was stored"
            )
        frames.append((digest, data))
        position += length
    h.record_uploads(user, [d for d, _ in frames])
    h.store.put_many(frames, verify=False)  # verified above, before anything was stored
    return {"received": len(frames), "stored": len(frames)}


@router.post("/chunks")
async def chunks_upload(request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)) -> dict:
    user = who.require_user()
    if who.scope != "write":
        raise ProtocolError("uploading chunks needs a write token")
    limit = request.app.state.body_limits.upload  # also enforced, before reading, by node.limits
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit:
        raise PayloadTooLarge(f"upload of {declared} bytes exceeds {limit}; send smaller batches")
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > limit:
            raise PayloadTooLarge(f"upload exceeds {limit} bytes; send smaller batches")
    return await run_in_threadpool(_store_frames, h, user, bytes(raw))


def stream_chunks(store: ChunkStore, digests: list[bytes], block: int = 4 << 20) -> Iterator[bytes]:
    """Chunk bytes in the order asked. Not re-hashed here: protocol clients verify every chunk on
    arrival (and drop a peer that serves a bad one); `store verify` finds the damage at rest."""
    pending: list[bytes | memoryview] = []
    size = 0
    for data in store.read_many(digests, verify=False):
        pending.append(data)
        size += len(data)
        if size >= block:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def stop_on_damage(pieces: Iterator[bytes], what: str) -> Iterator[bytes]:
    """Once a response has started its status cannot change: on damage, log and end it short.
    Clients verify what they receive and take the rest from another peer."""
    try:
        yield from pieces
    except (ChunkCorrupt, ChunkMissing) as exc:
        log.error("stopped serving %s: %s (run `iollm store verify`)", what, exc)


def checked_stream(
    store: ChunkStore, reader: ChunkedFile, start: int, end: int, what: str
) -> Iterator[bytes]:
    """Bytes [start, end) of a file, failing before the response starts wherever it can: chunks a
    read has already found damaged, and damage in the first block, are an error that names them.
    Damage further in ends the stream short (its status is sent by then) and is remembered, so the
    client's resumed request gets the error instead of the same cut."""
    damaged = store.damaged(reader.digests_in(start, end))
    if damaged:
        digest, reason = next(iter(damaged.items()))
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise ChunkCorrupt(digest, f"{what} cannot be served: {reason}{more}")
    pieces = reader.iter_range(start, end)
    try:
        head = next(pieces, b"")
    except ChunkCorrupt as exc:
        raise ChunkCorrupt(exc.digest, f"{what} cannot be served: {exc.reason}") from exc
    return stop_on_damage(itertools.chain((head,), pieces), what)


@router.post("/chunks/fetch")
async def chunks_fetch(
    request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)
) -> StreamingResponse:
    """Chunk bytes, only of repositories the caller can read (anonymous: public ones, which mirrors
    and anonymous pulls need). A chunk outside them is answered like one the node lacks."""
    body = _json_body(ChunkList, await request.body())
    digests = _digests(body.chunks)
    refused = await run_in_threadpool(h.unreadable_for, who, digests)
    if refused:
        raise MissingChunks(
            f"{len(refused)} requested chunk(s) are not on this node or in no repository your token can read",
            missing=[d.hex() for d in refused[:100]],
        )
    return StreamingResponse(
        stop_on_damage(stream_chunks(h.store, digests), f"{len(digests)} chunks"),
        media_type="application/octet-stream",
    )


# -- repositories ------------------------------------------------------------------------------


def repo_summary(h: Hub, repo: Repo) -> dict[str, Any]:
    summary = repo.as_dict()
    refs = h.refs(repo)
    summary["refs"] = refs
    head = refs["branches"].get("main")
    if head:
        card = h.card(head)
        summary["head"] = head
        summary["size"] = card.get("size")
        summary["card"] = {
            k: card.get(k) for k in ("architecture", "parameter_size", "quantization", "format")
        }
    return summary


@router.get("/repos")
def list_repos(
    type: str | None = None, search: str | None = None, who: Identity = Depends(caller), h: Hub = Depends(hub)
) -> dict[str, Any]:
    return {"repos": [repo_summary(h, r) for r in h.list_repos(who, type, search=search)]}


class CreateRepo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = "model"
    id: str
    private: bool = False
    exist_ok: bool = True


@router.post("/repos")
async def create_repo(request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)) -> dict:
    body = _json_body(CreateRepo, await request.body())
    repo, created = await run_in_threadpool(
        h.create_repo, who, body.type, body.id, body.private, body.exist_ok
    )
    return {**repo.as_dict(), "created": created}


@router.get("/repos/{repo_type}/{namespace}/{name}")
def repo_info(
    repo_type: str,
    namespace: str,
    name: str,
    revision: str | None = None,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    repo = h.get_repo(who, repo_type, f"{namespace}/{name}")
    info = repo.as_dict()
    info["refs"] = h.refs(repo)
    if info["refs"]["branches"] or revision:
        commit_id = h.resolve(repo, revision)
        manifest = h.manifest(commit_id)
        info["commit"] = commit_id
        info["card"] = h.card(commit_id)
        info["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in manifest.files]
        info["lineage"] = lineage(h, who, repo, info["card"])
    return info


def lineage(h: Hub, who: Identity, repo: Repo, card: dict[str, Any], depth: int = 8) -> list[dict[str, Any]]:
    """Walk declared base models upwards: [{repo, relation, exists}] from this model to its roots."""
    chain: list[dict[str, Any]] = []
    seen = {repo.repo_id}
    current = card
    while depth > 0:
        base = (current.get("declared") or current).get("base_model")
        if not base or base in seen:
            break
        seen.add(base)
        link: dict[str, Any] = {"repo": base, "relation": (current.get("declared") or {}).get("relation")}
        try:
            base_repo = h.get_repo(who, repo.type, base, pull_through=False)
            head = h.head(base_repo)
            current = h.card(head) if head else {}
            link["exists"] = True
        except Exception:
            link["exists"] = False
            current = {}
        chain.append(link)
        depth -= 1
    return chain


@router.get("/repos/{repo_type}/{namespace}/{name}/refs")
def repo_refs(
    repo_type: str, namespace: str, name: str, who: Identity = Depends(caller), h: Hub = Depends(hub)
) -> dict[str, dict[str, str]]:
    return h.refs(h.get_repo(who, repo_type, f"{namespace}/{name}"))


@router.get("/repos/{repo_type}/{namespace}/{name}/manifest/{revision:path}")
def repo_manifest(
    repo_type: str,
    namespace: str,
    name: str,
    revision: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> Response:
    repo = h.get_repo(who, repo_type, f"{namespace}/{name}")
    commit_id = h.resolve(repo, revision)
    manifest = h.manifest(commit_id)
    return Response(
        manifest.canonical(),
        media_type="application/json",
        headers={"X-Iollm-Commit": commit_id, "Cache-Control": "max-age=31536000, immutable"}
        if revision == commit_id
        else {"X-Iollm-Commit": commit_id},
    )


@router.get("/repos/{repo_type}/{namespace}/{name}/log")
def repo_log(
    repo_type: str,
    namespace: str,
    name: str,
    revision: str | None = None,
    limit: int = 100,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    repo = h.get_repo(who, repo_type, f"{namespace}/{name}")
    return {"commits": [c.as_dict() for c in h.log(repo, revision, limit=max(1, min(limit, 1000)))]}


class TagBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    revision: str
    tag: str
    force: bool = False


@router.post("/repos/{repo_type}/{namespace}/{name}/tags")
async def repo_tag(
    repo_type: str,
    namespace: str,
    name: str,
    request: Request,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    body = _json_body(TagBody, await request.body())
    repo = await run_in_threadpool(h.get_repo, who, repo_type, f"{namespace}/{name}")
    commit_id = await run_in_threadpool(h.tag, who, repo, body.revision, body.tag, body.force)
    return {"tag": body.tag, "commit": commit_id}


class CommitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    protocol: str = PROTOCOL
    branch: str = "main"
    parent: str | None = None
    check_parent: bool = True
    message: str = ""
    card: dict[str, Any] = Field(default_factory=dict)
    private: bool = False
    files: list[FileEntry]


@router.post("/repos/{repo_type}/{namespace}/{name}/commits")
async def repo_commit(
    repo_type: str,
    namespace: str,
    name: str,
    request: Request,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > 64 * 1024 * 1024:
        raise PayloadTooLarge("manifest larger than 64 MiB")
    body = _json_body(CommitBody, raw)
    manifest, repo = await run_in_threadpool(
        lambda: h.commit(
            who,
            repo_type,
            f"{namespace}/{name}",
            body.files,
            branch=body.branch,
            expected_parent=body.parent,
            check_parent=body.check_parent,
            message=body.message,
            card=body.card,
            private=body.private,
        )
    )
    return {"commit": manifest.commit_id, "repo": repo.repo_id, "type": repo.type, "branch": body.branch}


# -- accounts ----------------------------------------------------------------------------------


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    scope: str = "write"
    user: str | None = None


@router.post("/tokens")
async def token_create(request: Request, who: Identity = Depends(caller), acc: Accounts = Depends(accounts)):
    body = _json_body(TokenBody, await request.body())
    user = who.require_user()
    if body.user and body.user != user:
        who.require_admin()
        user = body.user
    if who.scope != "write" and body.scope == "write":
        raise ProtocolError("a read-only token cannot create a write token")
    return await run_in_threadpool(acc.create_token_record, user, body.name, body.scope)


@router.get("/tokens")
def token_list(who: Identity = Depends(caller), acc: Accounts = Depends(accounts)) -> dict[str, Any]:
    return {"tokens": acc.list_tokens(who.require_user())}


@router.delete("/tokens/{ref:path}")
async def token_revoke(
    ref: str, user: str | None = None, who: Identity = Depends(caller), acc: Accounts = Depends(accounts)
) -> dict[str, Any]:
    """Revoke one of the caller's tokens by id or name (an admin names another user with ``?user=``).
    Someone else's token is answered 404, exactly like one that does not exist."""
    owner = who.require_user()
    if who.scope != "write":
        raise Forbidden("revoking a token needs a write token")
    if user and user != owner:
        who.require_admin()
        owner = user
    return await run_in_threadpool(acc.revoke, owner, ref)


class UserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    admin: bool = False


@router.post("/users")
async def user_create(request: Request, who: Identity = Depends(caller), acc: Accounts = Depends(accounts)):
    body = _json_body(UserBody, await request.body())
    who.require_admin()
    await run_in_threadpool(acc.create_user, body.name, body.admin)
    secret = await run_in_threadpool(acc.create_token, body.name, "default", "write")
    return {"user": body.name, "token": secret}


@router.get("/users")
def user_list(who: Identity = Depends(caller), acc: Accounts = Depends(accounts)) -> dict[str, Any]:
    who.require_user()
    return {"users": acc.list_users()}


class OrgBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str
    role: str = "write"


@router.post("/orgs")
async def org_create(request: Request, who: Identity = Depends(caller), acc: Accounts = Depends(accounts)):
    body = _json_body(OrgBody, await request.body())
    owner = who.require_user()
    if who.scope != "write":
        raise ProtocolError("creating an organisation needs a write token")
    await run_in_threadpool(acc.create_org, body.name, owner)
    return {"org": body.name, "admin": owner}


@router.post("/orgs/{org}/members")
async def org_add_member(
    org: str, request: Request, who: Identity = Depends(caller), acc: Accounts = Depends(accounts)
) -> dict[str, Any]:
    body = _json_body(MemberBody, await request.body())
    who.require_user()
    acc.org_admin_check(who, org)
    await run_in_threadpool(acc.add_member, org, body.user, body.role)
    return {"org": org, "user": body.user, "role": body.role}


# -- store -------------------------------------------------------------------------------------


@router.post("/store/verify")
def store_verify(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    who.require_admin()
    report = request.app.state.store.verify()
    return {**report.as_dict(), "stats": request.app.state.store.stats()}


class MirrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    upstream: str
    repo: str
    type: str = "model"
    token: str | None = None


@router.post("/mirror")
async def mirror(request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)) -> dict[str, Any]:
    body = _json_body(MirrorBody, await request.body())
    who.require_admin()
    return await run_in_threadpool(mirror_repo, h, body.upstream, body.type, body.repo, body.token)
