"""Hugging Face Hub compatible routes, so an unmodified ``huggingface_hub`` works with HF_ENDPOINT=<node>.

The client needs nothing but HF_ENDPOINT and HF_TOKEN. Large files go up through Xet (``hf_xet``, the
client's default; the CAS side is ``hub.xet``) or, with ``HF_HUB_DISABLE_XET=1``, through LFS; either
way the node stores them in its own chunk store and computes their SHA-256 itself. Files uploaded
through Xet carry ``xetHash`` and the ``X-Xet-*`` headers on resolve, so they download through Xet too.
Uploads (preupload, LFS, commit) live in ``hf_uploads``; listings, refs and repository management in
``hf_listing``, ``hf_refs`` and ``hf_manage``; what they share in ``hf_common``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import (
    Conflict,
    EntryNotFound,
)
from ..protocol import FileEntry
from ..protocol.server import MessageErrorRoute, read_json_body
from ..store.reader import ChunkedFile
from .accounts import Identity
from .api import checked_stream
from .deps import caller, hub
from .front_matter import hub_tags
from .hf_common import (
    PLURAL,
    PREFIX,
    base_url,
    folder_entry,
    git_oid,
    hf_time,
    is_lfs,
    lfs_pointer,
    raw_segments,
    repo_type_of,
    tree_entry,
)
from .hf_errors import unserved
from .hf_listing import router as listing_router
from .hf_manage import router as manage_router
from .hf_refs import router as refs_router
from .hf_uploads import lfs_batch, lfs_router
from .hf_uploads import router as uploads_router
from .last_commit import add_last_commits
from .repos import Hub, Repo
from .xet import xet_headers, xet_store_of

router = APIRouter(route_class=MessageErrorRoute)
# Routes under /api/ that keep iollm's error object, as they had before routers declared their errors
# (huggingface_hub reads the message from the X-Error-Message header either way).
_iollm_errors = APIRouter()

TREE_PAGE = 1000


def _empty_info(repo: Repo) -> dict[str, Any]:
    return {
        "_id": f"{repo.type}-{repo.id}",
        "id": repo.repo_id,
        "author": repo.namespace,
        "sha": None,
        "createdAt": hf_time(repo.created_at),
        "lastModified": hf_time(repo.updated_at),
        "private": repo.private,
        "gated": False,
        "disabled": False,
        "tags": [],
        "siblings": [],
        **({"modelId": repo.repo_id} if repo.type == "model" else {}),
    }


def _info(request: Request, h: Hub, who: Identity, plural: str, repo_id: str, revision: str | None) -> dict:
    repo = h.get_repo(who, repo_type_of(plural), repo_id)
    if revision is None and h.head(repo) is None:
        return _empty_info(repo)  # created, nothing pushed yet: the Hub still answers its info
    commit_id = h.resolve(repo, revision)
    manifest = h.manifest(commit_id)
    card = h.card(commit_id)
    commit = h.commit_info(commit_id)
    with_blobs = request.query_params.get("blobs", "").lower() in ("1", "true")
    siblings = []
    for entry in manifest.files:
        sibling: dict[str, Any] = {"rfilename": entry.path}
        if with_blobs:
            sibling["size"] = entry.size
            sibling["blobId"] = git_oid(h, entry)
            if is_lfs(entry.path, entry.size):
                pointer = len(lfs_pointer(entry.sha256, entry.size))
                sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": pointer}
        siblings.append(sibling)
    declared = card.get("declared") or {}
    info: dict[str, Any] = {
        "_id": commit_id,
        "id": repo.repo_id,
        "author": repo.namespace,
        "sha": commit_id,
        "lastModified": hf_time(commit.created_at),
        "createdAt": hf_time(repo.created_at),
        "private": repo.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": hub_tags(card),
        "cardData": {k: v for k, v in {**declared, "license": card.get("license")}.items() if v is not None},
        "siblings": siblings,
        "usedStorage": card.get("size", 0),
    }
    if repo.type == "model":
        info["modelId"] = repo.repo_id
        if card.get("format") == "gguf":
            info["library_name"] = "gguf"
            info["gguf"] = {
                "total": card.get("parameters"),
                "architecture": card.get("architecture"),
                "context_length": card.get("context_length"),
            }
        elif card.get("format") == "safetensors":
            info["library_name"] = "transformers"
            info["safetensors"] = {
                "parameters": {card.get("dtype", "F32"): card["parameters"]},
                "total": card["parameters"],
            }
    return info


@router.get("/api/{plural}/{namespace}/{name}")
def hf_repo_info(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    return _info(request, h, who, plural, f"{namespace}/{name}", None)


@router.get("/api/{plural}/{namespace}/{name}/revision/{rest:path}")
def hf_repo_info_at(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    revision = raw_segments(request, "revision")[0]
    return _info(request, h, who, plural, f"{namespace}/{name}", revision)


@router.get("/api/{plural}/{namespace}/{name}/tree/{rest:path}")
def hf_tree(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    recursive: str = "false",
    cursor: int = 0,
    expand: str = "false",
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> Response:
    segments = raw_segments(request, "tree")
    revision, folder = segments[0], "/".join(s for s in segments[1:] if s)
    repo = h.get_repo(who, repo_type_of(plural), f"{namespace}/{name}")
    commit_id = h.resolve(repo, revision)
    manifest = h.manifest(commit_id)
    deep = recursive.lower() in ("1", "true")
    prefix = f"{folder}/" if folder else ""
    entries: list[dict[str, Any]] = []
    folders: set[str] = set()
    for entry in manifest.files:
        if not entry.path.startswith(prefix):
            continue
        rest_path = entry.path[len(prefix) :]
        parts = rest_path.split("/")
        for depth in range(1, len(parts) if deep else min(2, len(parts))):
            sub = prefix + "/".join(parts[:depth])
            if sub not in folders:
                folders.add(sub)
                entries.append(folder_entry(commit_id, sub))
        if deep or len(parts) == 1:
            entries.append(entry)  # type: ignore[arg-type]
    if folder and not entries:
        raise EntryNotFound(f"{folder!r} is not a folder of {repo.repo_id}@{revision}", commit=commit_id)
    page = entries[cursor : cursor + TREE_PAGE]
    body = [tree_entry(h, e) if isinstance(e, FileEntry) else e for e in page]
    if expand.lower() in ("1", "true"):
        add_last_commits(h, commit_id, body)
    headers = {}
    if cursor + TREE_PAGE < len(entries):
        query = urllib.parse.urlencode(
            {"recursive": recursive, "expand": expand, "cursor": cursor + TREE_PAGE}
        )
        headers["Link"] = f'<{base_url(request)}{request.url.path}?{query}>; rel="next"'
    return JSONResponse(body, headers=headers)


@router.post("/api/{plural}/{namespace}/{name}/paths-info/{rest:path}")
async def hf_paths_info(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> list[dict[str, Any]]:
    revision = raw_segments(request, "paths-info")[0]
    form = await request.form()
    wanted = [str(p) for p in form.getlist("paths")]
    expand = str(form.get("expand", "")).lower() in ("1", "true")

    def work() -> list[dict[str, Any]]:
        repo = h.get_repo(who, repo_type_of(plural), f"{namespace}/{name}")
        commit_id = h.resolve(repo, revision)
        manifest = h.manifest(commit_id)
        out = []
        for path in wanted:
            path = path.strip("/")
            entry = manifest.file(path)
            if entry is not None:
                out.append(tree_entry(h, entry))
            elif any(f.path.startswith(path + "/") for f in manifest.files):
                out.append(folder_entry(commit_id, path))
        if expand:
            add_last_commits(h, commit_id, out)
        return out

    return await run_in_threadpool(work)


@router.get("/api/{plural}/{namespace}/{name}/refs")
def hf_refs(plural: str, namespace: str, name: str, who: Identity = Depends(caller), h: Hub = Depends(hub)):
    repo = h.get_repo(who, repo_type_of(plural), f"{namespace}/{name}")
    refs = h.refs(repo)
    return {
        "branches": [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in refs["branches"].items()
        ],
        "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in refs["tags"].items()],
        "converts": [],
        "pullRequests": [],
    }


@router.get("/api/{plural}/{namespace}/{name}/commits/{rest:path}")
def hf_commits(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> list[dict[str, Any]]:
    revision = raw_segments(request, "commits")[0]
    repo = h.get_repo(who, repo_type_of(plural), f"{namespace}/{name}")
    return [
        {
            "id": c.id,
            "title": c.message.split("\n", 1)[0],
            "message": c.message,
            "date": hf_time(c.created_at),
            "authors": [{"user": c.author}],
        }
        for c in h.log(repo, revision, limit=1000)
    ]


@router.get("/api/whoami-v2")
def hf_whoami(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    who.require_user()
    return {
        "type": "user",
        "name": who.name,
        "fullname": who.name,
        "isPro": False,
        "orgs": [{"type": "org", "name": org, "roleInOrg": role} for org, role in who.orgs.items()],
        "auth": {"type": "access_token", "accessToken": {"displayName": "iollm", "role": who.scope}},
    }


@_iollm_errors.post("/api/validate-yaml")
def hf_validate_yaml() -> dict[str, list]:
    return {"errors": [], "warnings": []}


@router.post("/api/repos/create")
async def hf_create_repo(
    request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)
) -> Response:
    body = await read_json_body(request)
    namespace = body.get("organization") or who.require_user()
    repo_type = body.get("type") or "model"
    private = body.get("visibility") == "private" or bool(body.get("private"))
    repo_id = f"{namespace}/{body.get('name', '')}"
    url = f"{base_url(request)}/{PREFIX.get(repo_type, '')}{repo_id}"
    try:
        await run_in_threadpool(h.create_repo, who, repo_type, repo_id, private, False)
    except Conflict as exc:
        return JSONResponse({"error": exc.message, "url": url}, status_code=409)
    return JSONResponse({"url": url, "name": repo_id, "id": repo_id})


# -- resolve and LFS batch (paths that start with the namespace) -------------------------------


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """'bytes=a-b' -> (start, end exclusive); None means the whole file; ValueError if unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise ValueError("only single byte ranges are supported")
    first, _, last = spec.strip().partition("-")
    if first == "":
        length = int(last)
        start, end = max(size - length, 0), size
    else:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    if start >= size or start >= end:
        raise ValueError("range not satisfiable")
    return start, end


def _resolve(
    request: Request, h: Hub, who: Identity, repo_type: str, repo_id: str, rest: list[str]
) -> Response:
    if len(rest) < 2:
        raise EntryNotFound("resolve needs a revision and a file path")
    revision, path = rest[0], "/".join(rest[1:])
    repo = h.get_repo(who, repo_type, repo_id)
    commit_id = h.resolve(repo, revision)
    entry = h.manifest(commit_id).file(path)
    if entry is None:
        raise EntryNotFound(f"{path!r} does not exist in {repo_id}@{revision}", commit=commit_id)
    headers = {
        "X-Repo-Commit": commit_id,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": "inline; filename*=UTF-8''" + urllib.parse.quote(path.rsplit("/", 1)[-1]),
    }
    if is_lfs(entry.path, entry.size):
        headers["ETag"] = f'"{entry.sha256}"'
        headers["X-Linked-Etag"] = f'"{entry.sha256}"'
        headers["X-Linked-Size"] = str(entry.size)
        xet_hash = xet_store_of(h).hash_for_sha256(entry.sha256)  # xet: hf_xet downloads it via our CAS
        if xet_hash:
            headers.update(xet_headers(request, repo_type, repo_id, commit_id, xet_hash))
    else:
        headers["ETag"] = f'"{git_oid(h, entry)}"'
    try:
        span = _parse_range(request.headers.get("range", ""), entry.size)
    except ValueError:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{entry.size}"})
    start, end = span if span else (0, entry.size)
    status = 206 if span else 200
    if span:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    reader = ChunkedFile(h.store, [(bytes.fromhex(d), n) for d, n in entry.chunks])
    pieces = checked_stream(h.store, reader, start, end, f"{path} of {repo_id}@{commit_id[:12]}")
    return StreamingResponse(pieces, status_code=status, headers=headers)


async def hf_catch_all(request: Request) -> Response:
    """``[datasets/|spaces/]ns/name/resolve/rev/path`` and ``ns/name.git/info/lfs/objects/batch``."""
    raw = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
    parts = [urllib.parse.unquote(p) for p in raw.strip("/").split("/")]
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces"):
        repo_type = PLURAL[parts.pop(0)]
    who = await caller(request)
    h: Hub = request.app.state.hub
    if len(parts) >= 3 and parts[2] == "resolve" and request.method in ("GET", "HEAD"):
        repo_id = f"{parts[0]}/{parts[1]}"
        return await run_in_threadpool(_resolve, request, h, who, repo_type, repo_id, parts[3:])
    if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
        return await lfs_batch(request, repo_type, f"{parts[0]}/{parts[1][:-4]}", who, h)
    return await run_in_threadpool(unserved, request, h, who, repo_type, parts)


router.include_router(_iollm_errors)
router.include_router(lfs_router)
router.include_router(uploads_router)
router.include_router(listing_router)
router.include_router(refs_router)
router.include_router(manage_router)
