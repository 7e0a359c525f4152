"""POST /api/paths: publish a workflow as the model ``path/NAME``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from ..errors import ProtocolError
from ..hub import Identity
from ..hub.deps import caller
from ..protocol.server import parse_json_body

router = APIRouter(prefix="/api")


@router.post("/paths")
async def publish_path(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    body = parse_json_body(await request.body())
    if not isinstance(body, dict) or not isinstance(body.get("graph"), dict) or not body.get("name"):
        raise ProtocolError('send {"name": NAME, "graph": {...workflow...}}')
    return await run_in_threadpool(
        request.app.state.path_models.publish, who, str(body["name"]), body["graph"]
    )
