"""What runs on a provider's worker: one unit of a job, timed and signed with the provider's key.

The provider's key never leaves its process: ``iollm provider join`` installs a worker plugin that
holds it, and every unit's meter record is signed there before the result goes back to the node.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin, get_worker

from ..database import utc_now_iso
from .identity import ProviderIdentity
from .kind import KINDS
from .metering import result_digest

PLUGIN_NAME = "iollm-provider"
log = logging.getLogger("iollm.compute")


class ProviderPlugin(WorkerPlugin):
    """Lives in the provider's worker process: its identity, its declared resources, its cache."""

    name = PLUGIN_NAME

    def __init__(self, identity: ProviderIdentity, cpus: int, gpus: int, cache_dir: Path) -> None:
        self.identity = identity
        self.cpus = cpus
        self.gpus = gpus
        self.cache_dir = cache_dir
        self.state: dict[str, Any] = {}  # loaded engines and the like, shared by units on this worker

    def setup(self, worker) -> None:
        self.worker = worker


@dataclass
class UnitContext:
    """What a unit may use on the worker: where the node is, how to log, where to cache."""

    job: str
    unit: str
    attempt: int
    node_url: str
    token: str
    cache_dir: Path
    state: dict[str, Any] = field(default_factory=dict)
    cpus: int = 1  # what the provider lends: engines use this many threads

    def log(self, line: str) -> None:
        try:
            get_worker().log_event("iollm-job-log", {"job": self.job, "unit": self.unit, "line": line})
        except ValueError:  # not inside a worker (direct call in tests)
            log.info("%s/%s: %s", self.job, self.unit, line)


def run_unit(
    kind: str, job: str, unit: str, attempt: int, payload: dict[str, Any], audit: bool = False
) -> dict:
    """Entry point the node submits to Dask for every unit of every job."""
    worker = get_worker()
    plugin: ProviderPlugin | None = worker.plugins.get(PLUGIN_NAME)  # type: ignore[assignment]
    if plugin is None:
        raise RuntimeError("this worker has no provider identity: start workers with `iollm provider join`")
    handler = KINDS[kind]
    context = UnitContext(
        job, unit, attempt, payload["node_url"], payload["token"], plugin.cache_dir, plugin.state, plugin.cpus
    )
    started, clock = utc_now_iso(), time.monotonic()
    result = handler.run(payload, context)
    seconds = time.monotonic() - clock
    cpus = int(handler.resources(payload).get("CPU", 1))
    gpus = int(handler.resources(payload).get("GPU", 0))
    meter = {
        "job": job,
        "unit": unit,
        "attempt": attempt,
        "provider": plugin.identity.id,
        "worker": worker.address,
        "started_at": started,
        "ended_at": utc_now_iso(),
        "cpu_us": round(seconds * cpus * 1e6),
        "gpu_us": round(seconds * gpus * 1e6),
        "result_digest": result_digest(result),
        "audit": audit,
    }
    return {"result": result, "meter": meter, "signature": plugin.identity.sign(meter)}
