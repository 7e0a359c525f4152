"""Job log lines from the providers, written in batches off the node's event loop.

Providers log through Dask's event topic, whose handler runs on the node's event loop, the loop that
also runs the Dask scheduler. A durable commit per line there (one per unit at least) stalled the
scheduler for the length of an fsync each time, so a worker that had just finished a unit waited that
long for its next one. Lines are queued in arrival order instead and a background task writes all the
lines queued so far in one transaction, in a thread. ``flush`` waits until every line received before
it is stored: the job service calls it before a job's ``finish`` reads the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..database import Database, utc_now_iso
from .tables import logs

log = logging.getLogger("iollm.compute")
MAX_LINE = 4000


class JobLogWriter:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[dict[str, str]] = []
        self._writer: asyncio.Task | None = None
        self.batches = 0  # transactions written (what the batching saves is visible in tests)
        self.on_write: Callable[[int], None] | None = None

    def add(self, job_id: str, line: str) -> None:
        """Queue a line (call on the event loop); it is stored soon, in order, with those around it."""
        self._pending.append({"job_id": job_id, "at": utc_now_iso(), "line": line[:MAX_LINE]})
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception:  # a log line must never take the job service down
                log.exception("writing %d job log line(s) failed", len(batch))

    def _write(self, rows: list[dict[str, str]]) -> None:
        with self.db.write() as conn:
            conn.execute(logs.insert(), rows)
        self.batches += 1
        if self.on_write is not None:
            self.on_write(len(rows))

    async def flush(self) -> None:
        """Return once every line queued before this call is stored."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._pending:  # queued while no writer ran (cannot happen on one loop, but be safe)
            await self._drain()
