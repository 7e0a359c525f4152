"""The node's Dask scheduler (on loopback by default, or an external one) and who is connected to it.

Dask has no notion of identity, so the node adds one: when a worker appears, the node asks it to sign
a fresh nonce with its provider key (a handler that ``iollm provider join`` installs). Workers that
cannot, or whose provider is not registered or is suspended, are closed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from distributed import Client, Scheduler

from .. import signing
from .registry import Providers

log = logging.getLogger("iollm.compute")
POLL_SECONDS = 0.5


class Cluster:
    def __init__(
        self, providers: Providers, external: str | None = None, host: str = "127.0.0.1", port: int = 0
    ):
        self.providers = providers
        self.external = external
        self.host = host
        self.port = port
        self.scheduler: Scheduler | None = None
        self.client: Client | None = None
        self.workers: dict[str, str] = {}  # address -> provider id (verified)
        self._rejected: set[str] = set()
        self._watcher: asyncio.Task | None = None
        self.on_change: list[Callable[[], None]] = []

    @property
    def address(self) -> str:
        if self.external:
            return self.external
        assert self.scheduler is not None
        return self.scheduler.address

    async def start(self) -> None:
        logging.getLogger("distributed").setLevel(logging.WARNING)
        if not self.external:
            # Its HTTP endpoint (health, metrics) would otherwise bind :8787 on every interface.
            self.scheduler = await Scheduler(
                host=self.host, port=self.port, dashboard=False, dashboard_address=f"{self.host}:0"
            )
        self.client = await Client(self.address, asynchronous=True, name="iollm-node")
        self.providers.all_offline()
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self.client is not None:
            await self.client.close()
        if self.scheduler is not None:
            await self.scheduler.close()

    async def _watch(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # a hiccup of the scheduler connection must not stop the watcher
                log.exception("refreshing the worker list failed")
            await asyncio.sleep(POLL_SECONDS)

    async def refresh(self) -> None:
        assert self.client is not None
        identity = await self.client.scheduler.identity()
        current = {address: info.get("name") for address, info in identity.get("workers", {}).items()}
        for address in list(self.workers):
            if address not in current:
                provider = self.workers.pop(address)
                await asyncio.to_thread(self.providers.offline, address)
                log.info("provider %s left (%s)", provider, address)
                self._changed()
        self._rejected &= set(current)
        for address, name in current.items():
            if address not in self.workers and address not in self._rejected:
                await self._admit(address, str(name))

    async def _admit(self, address: str, name: str) -> None:
        assert self.client is not None
        provider = await asyncio.to_thread(self.providers.get, name)
        reason = None
        if provider is None:
            reason = "not a registered provider (run `iollm provider join`)"
        elif provider["state"] == "suspended":
            reason = "suspended after failed audits"
        else:
            nonce = secrets.token_hex(16)
            try:
                replies = await self.client.scheduler.broadcast(
                    msg={"op": "iollm_sign", "nonce": nonce}, workers=[address]
                )
                signature = replies.get(address)
            except Exception:
                signature = None
            if not signing.verify_json(name, {"nonce": nonce, "worker": address}, str(signature)):
                reason = "could not prove it holds the provider key"
        if reason:
            log.warning("closing worker %s (%s): %s", address, name, reason)
            self._rejected.add(address)
            await self.client.retire_workers(workers=[address], close_workers=True)
            return
        self.workers[address] = name
        await asyncio.to_thread(self.providers.online, name, address)
        log.info("provider %s joined at %s", name, address)
        self._changed()

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def other_worker(self, than: str) -> str | None:
        """A connected worker of a different provider (for audits)."""
        owner = self.workers.get(than)
        for address, provider in self.workers.items():
            if provider != owner:
                return address
        return None
