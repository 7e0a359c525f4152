"""Loaded engines: loaded lazily on first use, kept warm, least recently used unloaded when the memory
budget would be exceeded, and one request at a time per engine with a bounded queue in front.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import IollmError
from .backends import Backend, BackendFailure
from .resolve import ModelSpec, Resolver

log = logging.getLogger("iollm.runtime")


class Overloaded(IollmError):
    status = 429
    code = "overloaded"
    type = "rate_limit_error"


@dataclass
class Loaded:
    """An engine plus the queue that serialises requests to it."""

    key: str
    backend: Backend
    size: int
    load_seconds: float
    slots: asyncio.Semaphore
    waiting: int = 0
    active: int = 0
    first_use: bool = True  # the first request reports the load time (Ollama's load_duration)
    last_used: float = field(default_factory=time.monotonic)
    spec: ModelSpec | None = None  # the spec it was loaded for (what /api/ps names it by)


EngineFactory = Callable[[ModelSpec], Backend]


class ModelManager:
    def __init__(
        self,
        resolver: Resolver,
        factory: EngineFactory,
        memory_budget: int,
        parallel: int = 1,
        max_waiting: int = 64,
    ) -> None:
        self.resolver = resolver
        self.factory = factory
        self.memory_budget = memory_budget
        self.parallel = parallel
        self.max_waiting = max_waiting
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Loaded]] = {}
        self._lock = threading.Lock()

    def loaded(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "key": k,
                    "backend": v.backend.name,
                    "size": v.size,
                    "active": v.active,
                    "waiting": v.waiting,
                    "load_seconds": round(v.load_seconds, 3),
                    "spec": v.spec,
                    "context_length": int(getattr(v.backend, "context_length", 0) or 0),
                }
                for k, v in self._loaded.items()
            ]

    async def acquire(self, spec: ModelSpec) -> Loaded:
        """The loaded engine for ``spec`` (loading it, once, if needed)."""
        key = spec.load_key
        with self._lock:
            hit = self._loaded.get(key)
            if hit is not None:
                self._loaded.move_to_end(key)
                hit.last_used = time.monotonic()
                return hit
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[key] = pending
            try:
                loaded = await asyncio.to_thread(self._load, spec)
                pending.set_result(loaded)
            except BaseException as exc:
                pending.set_exception(exc)
                raise
            finally:
                self._loading.pop(key, None)
        return await asyncio.shield(pending)

    def _load(self, spec: ModelSpec) -> Loaded:
        size = max(spec.size, 1)
        self._make_room(size)
        started = time.perf_counter()
        try:
            backend = self.factory(spec)
        except IollmError:
            raise
        except Exception as exc:  # an engine that cannot load must not take the node down
            log.exception("loading %s failed", spec.model_id)
            raise BackendFailure(f"could not load {spec.model_id}: {exc.__class__.__name__}: {exc}") from exc
        loaded = Loaded(
            spec.load_key,
            backend,
            size,
            time.perf_counter() - started,
            asyncio.Semaphore(self.parallel),
            spec=spec,
        )
        with self._lock:
            self._loaded[spec.load_key] = loaded
        log.info("loaded %s (%s) in %.2f s", spec.model_id, backend.name, loaded.load_seconds)
        return loaded

    def _make_room(self, size: int) -> None:
        """Unload idle engines, least recently used first, until ``size`` more bytes fit the budget."""
        with self._lock:
            used = sum(v.size for v in self._loaded.values())
            for key in list(self._loaded):
                if used + size <= self.memory_budget:
                    break
                victim = self._loaded[key]
                if victim.active or victim.waiting:
                    continue
                del self._loaded[key]
                used -= victim.size
                log.info("unloading %s to stay within the memory budget", key)
                victim.backend.close()

    async def slot(self, loaded: Loaded) -> None:
        """Wait for a turn on this engine; refuse (429) when the queue is full."""
        if loaded.waiting >= self.max_waiting:
            raise Overloaded(
                f"{loaded.waiting} requests are already waiting for this model; retry shortly",
            )
        loaded.waiting += 1
        try:
            await loaded.slots.acquire()
        finally:
            loaded.waiting -= 1
        loaded.active += 1

    def release(self, loaded: Loaded) -> None:
        loaded.active -= 1
        loaded.last_used = time.monotonic()
        loaded.slots.release()

    def unload_all(self) -> None:
        with self._lock:
            for loaded in self._loaded.values():
                loaded.backend.close()
            self._loaded.clear()
