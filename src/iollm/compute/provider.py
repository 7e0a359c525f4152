"""``iollm provider join``: register with a node (signed request + verified benchmark), then lend this
machine as a Dask worker tagged with the provider's id and resources until Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import dask
from distributed import Worker

from ..protocol import NodeClient
from . import benchmark
from .identity import ProviderIdentity
from .units import ProviderPlugin

log = logging.getLogger("iollm.provider")
# Dask's statistical profiler samples every thread's stack every 10 ms on the worker's event loop: it
# takes the GIL from the unit's model loop for a dashboard a provider never shows.
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


def register(
    client: NodeClient, identity: ProviderIdentity, cpus: int, gpus: int, memory: int
) -> dict[str, Any]:
    """Answer the node's benchmark challenge and send the signed registration."""
    challenge = client.provider_challenge()
    product = benchmark.solve(int(challenge["seed"]), int(challenge["size"]))
    payload = {
        "provider": identity.id,
        "name": identity.name,
        "cpus": cpus,
        "gpus": gpus,
        "memory": memory,
        "nonce": challenge["nonce"],
        "time": int(time.time()),
    }
    return client.register_provider(payload, identity.sign(payload), product)


async def serve_worker(
    scheduler: str,
    identity: ProviderIdentity,
    cpus: int,
    gpus: int,
    memory: int,
    cache_dir: Path,
    announce=None,
) -> None:
    """Run a Dask worker until SIGINT/SIGTERM; units run on ``cpus`` threads."""
    resources = {"CPU": cpus}
    if gpus:
        resources["GPU"] = gpus
    with dask.config.set(WORKER_CONFIG):
        worker = await Worker(
            scheduler,
            name=identity.id,
            nthreads=cpus,
            resources=resources,
            memory_limit=memory or "auto",
            dashboard=False,
            host="127.0.0.1" if scheduler.startswith(("tcp://127.", "tcp://localhost")) else None,
            local_directory=str(cache_dir / "dask"),
        )

    def prove(nonce: str = "") -> str:
        return identity.sign({"nonce": nonce, "worker": worker.address})

    worker.handlers["iollm_sign"] = prove
    await worker.plugin_add(ProviderPlugin(identity, cpus, gpus, cache_dir), name="iollm-provider")
    if announce:
        announce(worker.address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    finished = asyncio.ensure_future(worker.finished())
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([finished, waiter], return_when=asyncio.FIRST_COMPLETED)
    if not finished.done():
        await worker.close(reason="provider left (Ctrl-C)")
    waiter.cancel()


def default_cpus() -> int:
    return max(1, len(os.sched_getaffinity(0)))
