"""HTTP routes the web UI needs beyond the node's existing APIs (which it calls directly: hub, paths,
leaderboard, compute, mining). Everything here lives under ``/api/editor``."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse

from ..errors import ProtocolError
from ..hub import Identity
from ..hub.deps import caller
from ..paths.graph import GraphError, problems
from ..protocol.server import read_json_body
from . import sse
from .catalog import catalog
from .evaluate import evaluate_work
from .export import python_script, script_name
from .runs import run_work, served_models
from .searches import Searches
from .versions import Versions

router = APIRouter(prefix="/api/editor", tags=["editor"])


def _versions(request: Request) -> Versions:
    return Versions(request.app.state.hub)


_searches_lock = threading.Lock()


def _searches(request: Request) -> Searches:
    """The node's searches, made once per process (making them marks a previous process's leftovers
    interrupted, so two requests must never both make them)."""
    with _searches_lock:
        found = getattr(request.app.state, "editor_searches", None)
        if found is None:
            parts = request.app.state.parts
            found = Searches(
                parts.runtime,
                parts.hub,
                parts.db,
                str(parts.layout.root.resolve()),
                parts.layout.root / "cache" / "calls.sqlite",
            )
            request.app.state.editor_searches = found
        return found


@router.get("/catalog")
def get_catalog(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    return catalog(request.app.state.hub, who)


@router.post("/validate")
async def validate(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    """Every problem of a graph, each with the node to mark, checked against the models served here."""
    data = await read_json_body(request)
    known = await run_in_threadpool(served_models, request.app.state.hub, who)
    found: list[GraphError] = problems(data.get("graph"), known)
    return {"ok": not found, "problems": [{"message": str(p), "node": p.node} for p in found]}


@router.post("/run")
async def run(request: Request, who: Identity = Depends(caller)) -> StreamingResponse:
    """Run a workflow, streaming per-node status, tokens, cost and latency as server-sent events.
    ``until`` runs up to a node; ``only`` runs one node; ``cached`` reuses earlier outputs unpaid."""
    data = await read_json_body(request)
    work = await run_in_threadpool(run_work, request.app.state.runtime, request.app.state.hub, who, data)
    return sse.stream(work)


@router.post("/evaluate")
async def evaluate(request: Request, who: Identity = Depends(caller)) -> StreamingResponse:
    data = await read_json_body(request)
    work = await run_in_threadpool(evaluate_work, request.app.state.runtime, request.app.state.hub, who, data)
    return sse.stream(work)


@router.post("/export/python", response_class=PlainTextResponse)
async def export_python(request: Request) -> PlainTextResponse:
    data = await read_json_body(request)
    graph = data.get("graph")
    if not isinstance(graph, dict):
        raise ProtocolError('send {"graph": {...workflow...}}')
    try:
        source = python_script(graph, str(request.base_url).rstrip("/"))
    except GraphError as exc:
        raise ProtocolError(str(exc), param=exc.node) from exc
    filename = script_name(graph)
    return PlainTextResponse(source, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/workflows")
def list_workflows(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    return {"workflows": _versions(request).workflows(who)}


@router.post("/workflows/{workflow:path}/versions")
async def save_version(workflow: str, request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    data = await read_json_body(request)
    return await run_in_threadpool(
        _versions(request).save,
        who,
        workflow,
        data.get("graph"),
        str(data.get("version") or ""),
        str(data.get("message") or ""),
    )


@router.get("/workflows/{workflow:path}/versions")
def list_versions(workflow: str, request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    return _versions(request).list(who, workflow)


@router.get("/workflows/{workflow:path}/graph")
def read_version(
    workflow: str, request: Request, revision: str | None = None, who: Identity = Depends(caller)
) -> dict[str, Any]:
    return _versions(request).read(who, workflow, revision)


@router.get("/workflows/{workflow:path}/diff")
def diff_versions(
    workflow: str, old: str, new: str, request: Request, who: Identity = Depends(caller)
) -> dict[str, Any]:
    return _versions(request).diff(who, workflow, old, new)


@router.post("/workflows/{workflow:path}/restore")
async def restore_version(workflow: str, request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    data = await read_json_body(request)
    if not data.get("revision"):
        raise ProtocolError('send {"revision": COMMIT_OR_TAG}')
    return await run_in_threadpool(_versions(request).restore, who, workflow, str(data["revision"]))


@router.post("/searches")
async def start_search(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    data = await read_json_body(request)
    return _searches(request).start(who, data)


@router.get("/searches")
def list_searches(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    """The caller's searches, newest first, kept across restarts (summaries: no results)."""
    return {"searches": _searches(request).list(who)}


@router.get("/searches/{search_id}")
def show_search(search_id: str, request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    """One search: config, progress, and its result (or, while running or interrupted, what it found)."""
    return _searches(request).get(who, search_id)


@router.post("/searches/{search_id}/cancel")
async def cancel_search(search_id: str, request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    return await _searches(request).cancel(who, search_id)
