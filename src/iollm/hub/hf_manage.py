"""Repository management through the Hub API: ``delete_repo``, ``move_repo`` and
``update_repo_settings`` (visibility). Every change needs write rights on the namespaces involved; a
repository the caller cannot read answers RepoNotFound, as if it did not exist."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from ..errors import ProtocolError
from ..protocol.server import MessageErrorRoute, read_json_body
from .accounts import Identity
from .deps import caller, hub
from .hf_common import repo_type_of
from .hf_errors import not_served
from .repos import Hub, check_type

router = APIRouter(route_class=MessageErrorRoute)


def _text(body: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{key!r} must be a non-empty string")
    return value


@router.delete("/api/repos/delete")
async def hf_delete_repo(request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)) -> dict:
    body = await read_json_body(request)
    name = _text(body, "name")
    namespace = _text(body, "organization", required=False) or who.require_user()
    repo_type = check_type(_text(body, "type", required=False) or "model")
    await run_in_threadpool(h.delete_repo, who, repo_type, f"{namespace}/{name}")
    return {}


@router.post("/api/repos/move")
async def hf_move_repo(request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)) -> dict:
    body = await read_json_body(request)
    source, target = _text(body, "fromRepo"), _text(body, "toRepo")
    repo_type = check_type(_text(body, "type", required=False) or "model")
    moved = await run_in_threadpool(h.move_repo, who, repo_type, source, target)
    return {"id": moved.repo_id, "type": moved.type}


@router.put("/api/{plural}/{namespace}/{name}/settings")
async def hf_repo_settings(
    request: Request,
    plural: str,
    namespace: str,
    name: str,
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, Any]:
    """``visibility`` ("public"/"private") or the older ``private`` flag; ``gated`` only as false,
    since access requests are not served."""
    body = await read_json_body(request)
    repo_type = repo_type_of(plural)
    visibility = body.get("visibility")
    private = body.get("private")
    if visibility is not None:
        if visibility not in ("public", "private"):
            raise ProtocolError(f"visibility must be 'public' or 'private', not {visibility!r}")
        private = visibility == "private"
    elif private is not None and not isinstance(private, bool):
        raise ProtocolError("private must be true or false")
    gated = body.get("gated")
    if gated not in (None, False):
        repo = await run_in_threadpool(h.get_repo, who, repo_type, f"{namespace}/{name}")
        who.require_write(repo.namespace)
        raise not_served("PUT", request.url.path, "gated repositories (access requests) are not served")
    if private is None:
        repo = await run_in_threadpool(h.get_repo, who, repo_type, f"{namespace}/{name}")
        who.require_write(repo.namespace)
        return {"private": repo.private}
    repo = await run_in_threadpool(h.set_private, who, repo_type, f"{namespace}/{name}", private)
    return {"private": repo.private}
