"""Uploads through the Hugging Face API: preupload (which files go by LFS), the LFS batch and upload
endpoints (signed, expiring upload tickets; the node hashes every byte itself) and the NDJSON commit.
Xet uploads go to ``hub.xet``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..errors import Conflict, IntegrityError, PayloadTooLarge, ProtocolError
from ..protocol import FileEntry, check_path
from ..protocol.server import MessageErrorRoute, json_object, parse_json_body
from ..store import MappedFile
from .accounts import Identity
from .deps import caller, hub
from .hf_common import PREFIX, base_url, git_oid, is_lfs, raw_segments, repo_type_of
from .repos import Hub, Repo

router = APIRouter(route_class=MessageErrorRoute)
# The LFS upload keeps iollm's error object (see hf_api).
lfs_router = APIRouter()
UPLOAD_TICKET_SECONDS = 3600


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


async def lfs_batch(request: Request, repo_type: str, repo_id: str, who: Identity, h: Hub) -> Response:
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


@lfs_router.put("/api/lfs/upload/{oid}")
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
