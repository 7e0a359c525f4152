"""Branches and tags through the Hub API (``create_branch``/``delete_branch``, ``create_tag``/
``delete_tag``), and the refusal of ``super_squash_history``.

Ref names arrive URL-quoted as one path segment (``quote(name, safe="")``), so they are read from the
raw path, where a ``/`` inside a name is still ``%2F``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from ..errors import ProtocolError
from ..protocol.server import MessageErrorRoute, read_json_body
from .accounts import Identity
from .deps import caller, hub
from .hf_common import repo_type_of
from .hf_errors import not_served
from .repos import Hub, Repo

router = APIRouter(route_class=MessageErrorRoute)
_REF_SEGMENT = 6  # '', 'api', plural, namespace, name, verb, <ref>


def ref_from_path(request: Request) -> str:
    """The ref segment after /api/{plural}/{ns}/{name}/{verb}/, unquoted once (it may contain '/')."""
    raw = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
    parts = raw.split("/")
    return urllib.parse.unquote("/".join(parts[_REF_SEGMENT:]))


def _repo(h: Hub, who: Identity, plural: str, namespace: str, name: str) -> Repo:
    return h.get_repo(who, repo_type_of(plural), f"{namespace}/{name}")


@router.post("/api/{plural}/{namespace}/{name}/branch/{rest:path}")
async def hf_create_branch(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    branch = ref_from_path(request)
    body = await read_json_body(request)
    start = body.get("startingPoint")
    if start is not None and not isinstance(start, str):
        raise ProtocolError("startingPoint must be a revision (branch, tag or commit id)")

    def work() -> dict[str, Any]:
        repo = _repo(h, who, plural, namespace, name)
        commit_id = h.create_branch(who, repo, branch, start)
        return {"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": commit_id}

    return await run_in_threadpool(work)


@router.delete("/api/{plural}/{namespace}/{name}/branch/{rest:path}")
async def hf_delete_branch(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    branch = ref_from_path(request)

    def work() -> dict[str, Any]:
        repo = _repo(h, who, plural, namespace, name)
        h.delete_ref(who, repo, "branch", branch)
        return {}

    return await run_in_threadpool(work)


@router.post("/api/{plural}/{namespace}/{name}/tag/{rest:path}")
async def hf_create_tag(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    revision = ref_from_path(request)
    body = await read_json_body(request)
    tag = body.get("tag")
    if not isinstance(tag, str) or not tag:
        raise ProtocolError('the body must name the tag: {"tag": "v1"}')

    def work() -> dict[str, Any]:
        repo = _repo(h, who, plural, namespace, name)
        commit_id = h.tag(who, repo, revision, tag, exist_ok=False)
        return {"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": commit_id}

    return await run_in_threadpool(work)


@router.delete("/api/{plural}/{namespace}/{name}/tag/{rest:path}")
async def hf_delete_tag(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    tag = ref_from_path(request)

    def work() -> dict[str, Any]:
        repo = _repo(h, who, plural, namespace, name)
        h.delete_ref(who, repo, "tag", tag)
        return {}

    return await run_in_threadpool(work)


@router.post("/api/{plural}/{namespace}/{name}/super-squash/{rest:path}")
async def hf_super_squash(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    rest: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> None:
    """Refused: commits here are content-addressed manifests that mirrors and pulls replicate by id;
    rewriting a branch's history would orphan what others have already copied."""
    repo = await run_in_threadpool(_repo, h, who, plural, namespace, name)
    who.require_write(repo.namespace)
    raise not_served(
        "POST",
        request.url.path,
        "history is never rewritten on an iollm node (mirrors replicate commits by id); "
        "keep the history, or create a new repository from the current files",
    )
