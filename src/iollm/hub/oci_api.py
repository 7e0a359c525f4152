"""HTTP routes for archives: ``GET /api/export/...`` streams a tar, ``POST /api/import`` takes one.

An upload is streamed to a file in the node's tmp folder (never held in memory), checked in full by
``archive.import_archive`` and deleted afterwards, whatever the outcome.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..errors import Forbidden, PayloadTooLarge
from .accounts import Identity
from .api import stop_on_damage
from .archive import import_archive, plan_export
from .deps import caller, hub
from .repos import Hub

DEFAULT_MAX_IMPORT_BYTES = 64 << 30
WRITE_BLOCK = 8 << 20

router = APIRouter(prefix="/api")


def max_import_bytes(request: Request) -> int:
    """``app.state.max_import_bytes``, else ``IOLLM_MAX_IMPORT_BYTES``, else 64 GiB."""
    configured = getattr(request.app.state, "max_import_bytes", None)
    return int(configured or os.environ.get("IOLLM_MAX_IMPORT_BYTES") or DEFAULT_MAX_IMPORT_BYTES)


@router.get("/export/{repo_type}/{namespace}/{name}")
def export_archive(
    repo_type: str,
    namespace: str,
    name: str,
    revision: str = "main",
    who: Identity = Depends(caller),
    h: Hub = Depends(hub),
) -> StreamingResponse:
    plan = plan_export(h, who, repo_type, f"{namespace}/{name}", revision)
    return StreamingResponse(
        stop_on_damage(plan.stream(h.store), f"archive of {namespace}/{name}@{revision}"),
        media_type="application/x-tar",
        headers={
            "Content-Length": str(plan.size),
            "Content-Disposition": f'attachment; filename="{plan.filename()}"',
            "X-Iollm-Commit": plan.root.commit_id,
        },
    )


async def receive_to_file(request: Request, fd: int, limit: int) -> int:
    """Copy the request body into ``fd`` in large writes off the event loop; returns its size."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit:
        raise PayloadTooLarge(f"archive of {declared} bytes exceeds this node's import limit of {limit}")
    size = 0
    pending: list[bytes] = []
    pending_size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise PayloadTooLarge(f"archive exceeds this node's import limit of {limit} bytes")
        pending.append(piece)
        pending_size += len(piece)
        if pending_size >= WRITE_BLOCK:
            await run_in_threadpool(_write_all, fd, b"".join(pending))
            pending, pending_size = [], 0
    if pending:
        await run_in_threadpool(_write_all, fd, b"".join(pending))
    return size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@router.post("/import")
async def import_route(
    request: Request, who: Identity = Depends(caller), h: Hub = Depends(hub)
) -> dict[str, Any]:
    who.require_user()
    if who.scope != "write":
        raise Forbidden("this token is read-only; importing needs a write token")
    tmp_dir = Path(request.app.state.tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="import-", suffix=".tar", dir=tmp_dir)
    try:
        try:
            await receive_to_file(request, fd, max_import_bytes(request))
        finally:
            os.close(fd)
        return await run_in_threadpool(import_archive, h, who, Path(name))
    finally:
        os.unlink(name)
