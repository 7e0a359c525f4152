"""Ollama's model-management routes: /api/pull, /api/push, /api/create, /api/blobs, /api/copy, /api/delete.

What each means on a node is in ``runtime.ollama_models``. Answers follow Ollama: progress as NDJSON
``{"status": ...}`` lines unless ``"stream": false`` (then one ``{"status": "success"}``), errors as
``{"error": "..."}`` with the HTTP status (404 for a model the caller cannot read, whoever owns it),
and an error after the first progress line as a last ``{"error"}`` line, as Ollama sends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import IollmError, PayloadTooLarge, ProtocolError
from ..hub import Hub, Identity
from ..hub.deps import caller
from ..hub.oci_api import max_import_bytes
from ..protocol.server import MessageErrorRoute, read_json_body
from . import ollama_models as models
from .environments import Environments
from .ollama_api import body_of, streams
from .resolve import Resolver

router = APIRouter(prefix="/api", route_class=MessageErrorRoute)

Work = Callable[[Callable[[dict[str, Any]], None]], None]
_DONE = object()


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


async def _progress(work: Work, first: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Run ``work`` on a thread and stream the progress it reports, then ``success`` (or the error)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def report(status: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, status)

    def run() -> None:
        try:
            work(report)
            report({"status": "success"})
        except Exception as exc:  # the stream has begun: the error is its last line
            message = exc.message if isinstance(exc, IollmError) else f"internal error: {exc}"
            report({"error": message})
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    for status in first:
        yield _line(status)
    loop.run_in_executor(None, run)
    while (item := await queue.get()) is not _DONE:
        yield _line(item)


async def _answer(body: dict[str, Any], work: Work, first: list[dict[str, Any]]) -> Response:
    """Stream ``work``'s progress, or (``"stream": false``) run it and answer its outcome once."""
    if streams(body):
        return StreamingResponse(_progress(work, first), media_type="application/x-ndjson")
    await run_in_threadpool(work, lambda _status: None)
    return JSONResponse({"status": "success"})


def _parts(request: Request) -> tuple[Hub, Resolver]:
    return request.app.state.hub, request.app.state.runtime.resolver


@router.post("/pull")
async def pull(request: Request, who: Identity = Depends(caller)) -> Response:
    """Make a model ready to run here: from this hub, or pulled through from an upstream node."""
    body = await body_of(request)
    hub, resolver = _parts(request)
    who.require_user()  # a pull writes weights to this node's disk
    model = body["model"]
    upstream = hub.on_missing_repo is not None
    if not upstream or await run_in_threadpool(models.is_local, hub, who, model):
        spec = await run_in_threadpool(resolver.resolve, who, model)  # 404 before any progress line

        def work(report: Callable[[dict[str, Any]], None]) -> None:
            models.materialize_with_progress(resolver, spec, report)

    else:

        def work(report: Callable[[dict[str, Any]], None]) -> None:
            found = resolver.resolve(who, model)  # mirrors it from the first upstream that has it
            models.materialize_with_progress(resolver, found, report)

        if not streams(body):  # one answer: its status is the error's (404), as for a local model
            await run_in_threadpool(resolver.resolve, who, model)
    return await _answer(body, work, [{"status": "pulling manifest"}])


@router.post("/push")
async def push(request: Request, who: Identity = Depends(caller)) -> Response:
    """A model in this hub is already where its clients pull from: push checks that and sends nothing."""
    body = await body_of(request)
    hub, resolver = _parts(request)
    spec = await run_in_threadpool(models.check_push, hub, resolver, who, body["model"])
    where = f"{spec.repo}@{spec.commit[:12]} is in this node's hub; nothing to upload"

    def work(report: Callable[[dict[str, Any]], None]) -> None:
        report({"status": where})

    return await _answer(body, work, [{"status": "retrieving manifest"}])


@router.post("/create")
async def create(request: Request, who: Identity = Depends(caller)) -> Response:
    """A new model from an existing one (``from``) or uploaded blobs (``files``), plus overrides."""
    body = await body_of(request)
    hub, resolver = _parts(request)
    envs: Environments = request.app.state.environments
    plan = await run_in_threadpool(models.plan_create, hub, resolver, who, body)

    def work(report: Callable[[dict[str, Any]], None]) -> None:
        report({"status": f"creating {plan.name} from {plan.envfile.base.spec}"})
        created = models.create_model(envs, who, plan)
        report({"status": f"writing manifest {created.name}@{created.commit[:12]}"})

    return await _answer(body, work, [{"status": "parsing modelfile"}])


@router.head("/blobs/{digest}")
async def has_blob(request: Request, digest: str, who: Identity = Depends(caller)) -> Response:
    """200 when the caller may use this content (sent it, or reads a model holding it), else 404."""
    sha256 = models.blob_sha256(digest)
    found = await run_in_threadpool(request.app.state.hub.content_for, who, sha256)
    return Response(status_code=200 if found is not None else 404)


@router.post("/blobs/{digest}")
async def upload_blob(request: Request, digest: str, who: Identity = Depends(caller)) -> Response:
    """Store a file for a later create; only bytes that hash to the digest in the URL are kept."""
    sha256 = models.blob_sha256(digest)
    who.require_write(who.require_user())  # uploads need a write token
    hub: Hub = request.app.state.hub
    tmp_dir: Path = request.app.state.tmp_dir
    handle = tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False)  # noqa: SIM115 - closed below
    try:
        hasher = hashlib.sha256()
        limit, received = max_import_bytes(request), 0  # a blob is a whole weights file, as in an import
        async for piece in request.stream():
            received += len(piece)
            if received > limit:
                raise PayloadTooLarge(
                    f"this blob is over {limit} bytes, the node's limit for one file (IOLLM_MAX_IMPORT_BYTES)"
                )
            hasher.update(piece)
            await run_in_threadpool(handle.write, piece)
        handle.close()
        if hasher.hexdigest() != sha256:
            raise ProtocolError(
                f"digest mismatch: the uploaded bytes hash to sha256:{hasher.hexdigest()}, "
                f"not sha256:{sha256}",
                param="digest",
            )
        await run_in_threadpool(models.ingest_blob, hub, who, sha256, Path(handle.name))
    finally:
        handle.close()
        os.unlink(handle.name)
    return Response(status_code=201)


@router.post("/copy")
async def copy(request: Request, who: Identity = Depends(caller)) -> Response:
    """``destination`` gets the source's files as a new commit (the caller must read the source)."""
    body = await read_json_body(request)
    source, destination = body.get("source"), body.get("destination")
    if not isinstance(source, str) or not source:
        raise ProtocolError("source is required", param="source")
    if not isinstance(destination, str) or not destination:
        raise ProtocolError("destination is required", param="destination")
    hub, resolver = _parts(request)
    await run_in_threadpool(models.copy_model, hub, resolver, who, source, destination)
    return Response(status_code=200)


@router.delete("/delete")
async def delete(request: Request, who: Identity = Depends(caller)) -> Response:
    """Remove a model's name; only a writer of its namespace may."""
    body = await body_of(request)
    hub, resolver = _parts(request)
    await run_in_threadpool(models.delete_model, hub, resolver, who, body["model"])
    return Response(status_code=200)
