"""HTTP routes for environments: create from an Envfile, export the (pinned) Envfile, list workers.

``POST /api/environments`` ``{"name", "envfile", "files"?}`` -> the new commit and resolved environment;
``GET /api/environments/{ns}/{name}/envfile?pinned=true&revision=...`` -> ``{"name", "commit", "envfile"}``;
``GET /api/environments/workers`` -> the worker processes this node runs (admin only).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import Forbidden, PayloadTooLarge, ProtocolError
from ..hub import Identity
from ..hub.deps import caller
from ..protocol import FileEntry
from .environments import Environments

router = APIRouter(prefix="/api/environments")
MAX_BODY = 64 * 1024 * 1024


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    envfile: str = Field(max_length=4 * 1024 * 1024)
    files: list[FileEntry] = Field(default_factory=list)


def environments(request: Request) -> Environments:
    return request.app.state.environments


@router.post("")
async def create_environment(
    request: Request, who: Identity = Depends(caller), envs: Environments = Depends(environments)
) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge("request larger than 64 MiB")
    try:
        body = CreateBody.model_validate(json.loads(raw or b"{}"))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ProtocolError(f"malformed request: {exc}".splitlines()[0]) from exc
    created = await run_in_threadpool(envs.create, who, body.name, body.envfile, body.files)
    return created.as_dict()


@router.get("/workers")
def list_workers(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    if not who.is_admin:
        raise Forbidden("listing worker processes needs an admin token")
    pool = getattr(request.app.state, "workers", None)
    return {"workers": pool.running() if pool is not None else []}


@router.get("/{namespace}/{name}/envfile")
def export_envfile(
    namespace: str,
    name: str,
    pinned: bool = True,
    revision: str | None = None,
    who: Identity = Depends(caller),
    envs: Environments = Depends(environments),
) -> dict[str, Any]:
    return envs.envfile(who, f"{namespace}/{name}", revision, pinned)
