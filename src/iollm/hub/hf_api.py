"""Hugging Face Hub compatible routes, so an unmodified ``huggingface_hub`` works with HF_ENDPOINT=<node>.

The client needs nothing but HF_ENDPOINT and HF_TOKEN. Large files go up through Xet (``hf_xet``, the
client's default; the CAS side is ``hub.xet``) or, with ``HF_HUB_DISABLE_XET=1``, through LFS; either
way the node stores them in its own chunk store and computes their SHA-256 itself. Files uploaded
through Xet carry ``xetHash`` and the ``X-Xet-*`` headers on resolve, so they download through Xet too.
Listings, refs and repository management live in ``hf_listing``, ``hf_refs`` and ``hf_manage``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import tempfile
import time
import urllib.parse
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import (
    Conflict,
    EntryNotFound,
    IntegrityError,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
)
from ..protocol import FileEntry, check_path
from ..protocol.server import MessageErrorRoute, json_object, parse_json_body, read_json_body
from ..store import MappedFile
from ..store.reader import ChunkedFile
from .accounts import Identity
from .api import checked_stream
from .deps import caller, hub
from .front_matter import hub_tags
from .hf_errors import unserved
from .hf_listing import router as listing_router
from .hf_manage import router as manage_router
from .hf_refs import router as refs_router
from .last_commit import add_last_commits
from .repos import Hub, Repo
from .xet import xet_headers, xet_store_of

router = APIRouter(route_class=MessageErrorRoute)
# Routes under /api/ that keep iollm's error object, as they had before routers declared their errors
# (huggingface_hub reads the message from the X-Error-Message header either way).
_iollm_errors = APIRouter()

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
TREE_PAGE = 1000
UPLOAD_TICKET_SECONDS = 3600
_git_oids: OrderedDict[str, str] = OrderedDict()


# -- helpers -----------------------------------------------------------------------------------


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


# -- uploads -----------------------------------------------------------------------------------


def _head_manifest(h: Hub, repo: Repo, revision: str):
    head = h.head(repo, revision)
    return (head, h.manifest(head)) if head else (None, None)


@router.post("/api/{plural}/{namespace}/{name}/preupload/{rest:path}")
async def hf_preupload(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    revision = raw_segments(request, "preupload")[0]
    body = json_object(await request.body())
    repo = await run_in_threadpool(h.get_repo, who, repo_type_of(plural), f"{namespace}/{name}")
    who.require_write(repo.namespace)
    _, manifest = await run_in_threadpool(_head_manifest, h, repo, revision)
    out = []
    for item in _objects(body, "files"):
        path, size = str(item.get("path", "")), _size(item.get("size", 0))
        answer: dict[str, Any] = {
            "path": path,
            "uploadMode": "lfs" if is_lfs(path, size) and size else "regular",
        }
        answer["shouldIgnore"] = False
        existing = manifest.file(path) if manifest else None
        if existing is not None:
            answer["oid"] = existing.sha256 if is_lfs(path, existing.size) else git_oid(h, existing)
        out.append(answer)
    return {"files": out}


def _objects(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """``body[key]`` as a list of JSON objects, else a 400 (never a 500 on a malformed request)."""
    items = body.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ProtocolError(f"{key!r} must be a list of JSON objects")
    return items


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"size must be an integer, not {value!r}")
    return value


def _ticket(secret: bytes, user: str, repo_type: str, repo_id: str, oid: str, size: int, expires: int) -> str:
    message = f"{user}|{repo_type}|{repo_id}|{oid}|{size}|{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


async def _lfs_batch(request: Request, repo_type: str, repo_id: str, who: Identity, h: Hub) -> Response:
    body = json_object(await request.body())
    repo = await run_in_threadpool(h.get_repo, who, repo_type, repo_id)
    if body.get("operation") != "upload":
        raise ProtocolError("only the LFS 'upload' operation is served; download with /resolve")
    who.require_write(repo.namespace)
    secret: bytes = request.app.state.secret
    expires = int(time.time()) + UPLOAD_TICKET_SECONDS
    objects = []
    for obj in _objects(body, "objects"):
        oid, size = str(obj.get("oid", "")), _size(obj.get("size", -1))
        if len(oid) != 64 or size < 0:
            objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "bad oid or size"}})
            continue
        # "Already there" only for content this caller could commit anyway; anything else must be
        # uploaded (and hashed by the node), so the answer reveals nothing about others' content.
        if await run_in_threadpool(h.content_for, who, oid, size) is not None:
            objects.append({"oid": oid, "size": size})
            continue
        query = urllib.parse.urlencode(
            {
                "user": who.name,
                "type": repo_type,
                "repo": repo_id,
                "size": size,
                "expires": expires,
                "ticket": _ticket(secret, who.name or "", repo_type, repo_id, oid, size, expires),
            }
        )
        objects.append(
            {
                "oid": oid,
                "size": size,
                "authenticated": True,
                "actions": {
                    "upload": {
                        "href": f"{base_url(request)}/api/lfs/upload/{oid}?{query}",
                        "expires_in": UPLOAD_TICKET_SECONDS,
                    }
                },
            }
        )
    return JSONResponse({"transfer": "basic", "objects": objects}, media_type="application/vnd.git-lfs+json")


def _ingest_upload(h: Hub, user: str, oid: str, size: int, source: Path) -> None:
    """Hash and store an LFS upload; only bytes that hash to the announced oid count as that oid."""
    with MappedFile(source) as mapped:
        digest = h.ingest(user, mapped.view)
    if digest.size != size or digest.sha256 != oid:
        raise IntegrityError(
            f"uploaded bytes hash to {digest.sha256} ({digest.size} bytes), expected {oid} ({size})"
        )


@_iollm_errors.put("/api/lfs/upload/{oid}")
async def hf_lfs_upload(request: Request, oid: str, h: Hub = Depends(hub)) -> Response:
    params = request.query_params
    try:
        size, expires = int(params["size"]), int(params["expires"])
        expected = _ticket(
            request.app.state.secret, params["user"], params["type"], params["repo"], oid, size, expires
        )
    except (KeyError, ValueError) as exc:
        raise ProtocolError("upload URL is incomplete: ask the LFS batch endpoint for a new one") from exc
    if not hmac.compare_digest(expected, params.get("ticket", "")) or expires < time.time():
        raise ProtocolError("upload ticket is invalid or expired: ask the LFS batch endpoint for a new one")
    declared = int(request.headers.get("content-length") or 0)
    if declared > size:  # refused before reading: the signed ticket bounds this upload
        raise PayloadTooLarge(f"upload of {declared} bytes is larger than the announced {size} bytes")
    tmp_dir: Path = request.app.state.tmp_dir
    handle = tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False)  # noqa: SIM115 - closed below
    try:
        received = 0
        async for piece in request.stream():
            received += len(piece)
            if received > size:
                raise IntegrityError(f"upload is larger than the announced {size} bytes")
            await run_in_threadpool(handle.write, piece)
        handle.close()
        await run_in_threadpool(_ingest_upload, h, params["user"], oid, size, Path(handle.name))
    finally:
        handle.close()
        os.unlink(handle.name)
    return Response(status_code=200)


router.include_router(_iollm_errors)


@router.post("/api/{plural}/{namespace}/{name}/commit/{rest:path}")
async def hf_commit(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> Response:
    branch = raw_segments(request, "commit")[0]
    repo_type = repo_type_of(plural)
    repo_id = f"{namespace}/{name}"
    lines = [parse_json_body(line) for line in (await request.body()).splitlines() if line.strip()]
    if not all(isinstance(line, dict) for line in lines):
        raise ProtocolError("each line of a commit must be a JSON object")

    def work() -> dict[str, Any]:
        repo = h.get_repo(who, repo_type, repo_id)
        who.require_write(repo.namespace)
        head, manifest = _head_manifest(h, repo, branch)
        files = {f.path: f for f in manifest.files} if manifest else {}
        header: dict[str, Any] = {}
        for line in lines:
            key, value = line.get("key"), line.get("value") or {}
            if not isinstance(value, dict):
                raise ProtocolError(f"the value of a {key!r} line must be a JSON object")
            if key == "header":
                header = value
            elif key == "file":
                path = check_path(str(value.get("path", "")))
                try:
                    data = base64.b64decode(value.get("content", ""), validate=True)
                except binascii.Error as exc:
                    raise ProtocolError(f"{path}: content is not valid base64") from exc
                digest = h.ingest(who.name, data)
                files[path] = FileEntry.from_digest(path, digest)
            elif key == "lfsFile":
                path = check_path(str(value.get("path", "")))
                oid = str(value.get("oid", ""))
                size = value.get("size")
                known = h.content_for(who, oid, size if isinstance(size, int) else None)
                if known is None:  # also when it exists but is not this caller's to name
                    raise ProtocolError(
                        f"{path}: LFS object {oid} was never uploaded; upload it before committing"
                    )
                files[path] = FileEntry(path=path, size=known[0], sha256=oid, chunks=known[1])
            elif key == "deletedFile":
                files.pop(str(value.get("path", "")), None)
            elif key == "deletedFolder":
                folder = str(value.get("path", "")).rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(folder)}
            else:
                raise ProtocolError(f"unknown commit operation {key!r}")
        parent = header.get("parentCommit")
        if parent and parent != head:
            raise Conflict("A commit has happened since. Please refresh and try again.")
        message = header.get("summary") or "Upload with huggingface_hub"
        if header.get("description"):
            message += "\n\n" + header["description"]
        new, _ = h.commit(
            who,
            repo_type,
            repo_id,
            list(files.values()),
            branch=branch,
            expected_parent=head,
            check_parent=True,
            message=message,
            create=False,
        )
        return {
            "success": True,
            "commitOid": new.commit_id,
            "commitUrl": f"{base_url(request)}/{PREFIX[repo_type]}{repo_id}/commit/{new.commit_id}",
        }

    try:
        return JSONResponse(await run_in_threadpool(work))
    except Conflict as exc:
        return JSONResponse({"error": exc.message}, status_code=412, headers={"X-Error-Message": exc.message})


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
        return await _lfs_batch(request, repo_type, f"{parts[0]}/{parts[1][:-4]}", who, h)
    return await run_in_threadpool(unserved, request, h, who, repo_type, parts)


router.include_router(listing_router)
router.include_router(refs_router)
router.include_router(manage_router)
