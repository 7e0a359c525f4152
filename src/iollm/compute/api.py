"""HTTP face of the compute layer: provider registration, the pool, jobs, logs and meter records."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from ..errors import Unavailable
from ..hub import Identity
from ..hub.deps import caller
from ..protocol.server import read_json_body

router = APIRouter(prefix="/api")


def compute(request: Request):
    parts = getattr(request.app.state, "compute", None)
    if parts is None or parts.cluster.client is None:
        raise Unavailable("this node's compute pool is not running")
    return parts


@router.post("/providers/challenge")
def challenge(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    who.require_user()
    return compute(request).providers.challenge()


@router.post("/providers")
async def register(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    data = await read_json_body(request)
    parts = compute(request)
    result = await run_in_threadpool(parts.providers.register, who, data)
    return {**result, "scheduler": parts.cluster.address}


@router.get("/providers")
def list_providers(request: Request) -> dict[str, Any]:
    return {"providers": compute(request).providers.list()}


@router.get("/providers/{provider_id}")
def show_provider(provider_id: str, request: Request) -> dict[str, Any]:
    return compute(request).providers.show(provider_id)


@router.get("/cluster")
async def cluster_info(request: Request) -> dict[str, Any]:
    parts = compute(request)
    processing = await parts.cluster.client.processing()
    return {
        "scheduler": parts.cluster.address,
        "workers": parts.cluster.workers,
        "running": {parts.cluster.workers.get(w, w): list(keys) for w, keys in processing.items() if keys},
        "node_key": parts.jobs.node_key_id(),
    }


@router.post("/jobs")
async def submit(request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    data = await read_json_body(request)
    parts = compute(request)
    return await run_in_threadpool(
        parts.jobs.submit, who, str(data.get("kind", "")), data.get("spec"), data.get("idempotency_key")
    )


@router.get("/jobs")
def list_jobs(request: Request, state: str | None = None, who: Identity = Depends(caller)) -> dict[str, Any]:
    name = who.require_user()
    return {"jobs": compute(request).jobs.list(state, None if who.is_admin else name)}


MAX_WAIT_SECONDS = 30.0


@router.get("/jobs/{job_id}")
async def show_job(
    job_id: str, request: Request, wait: float = 0.0, who: Identity = Depends(caller)
) -> dict[str, Any]:
    """``?wait=S`` (at most 30): answer when the job ends, or as it is after S seconds (a long-poll)."""
    who.require_user()
    jobs = compute(request).jobs
    if wait > 0:
        return await jobs.wait(job_id, min(wait, MAX_WAIT_SECONDS))
    return await run_in_threadpool(jobs.get, job_id)


@router.get("/jobs/{job_id}/logs")
def job_logs(job_id: str, request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    who.require_user()
    return {"job": job_id, "logs": compute(request).jobs.logs(job_id)}


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, request: Request, who: Identity = Depends(caller)) -> dict[str, Any]:
    return compute(request).jobs.cancel(who, job_id)


@router.get("/meters")
def list_meters(
    request: Request,
    job: str | None = None,
    provider: str | None = None,
    since: str | None = None,
    who: Identity = Depends(caller),
) -> dict[str, Any]:
    who.require_user()
    return {"meters": compute(request).meters.list(job, provider, since)}
