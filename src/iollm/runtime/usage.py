"""Usage records: one per inference call, streaming or not, written exactly once.

These rows are what the joint mining layer bills, so each carries the exact token counts the engine
processed, the model's commit, and the caller. Writes happen on a background thread (off the
response path); ``close`` drains the queue before the node exits.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text, func, select

from ..database import Database, utc_now_iso

log = logging.getLogger("iollm.runtime")

# The writer waits this long after a call's record before writing it, gathering what comes meanwhile:
# a write holds the GIL for about half a millisecond of SQLAlchemy work, and started at once it would
# compete with the very response whose record it is. Billing reads records every half second.
BATCH_DELAY_S = 0.05
BATCH_MAX = 500
metadata = MetaData()

usage = Table(
    "runtime_usage",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # order of writing: a safe billing cursor
    Column("id", String(32), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False, index=True),
    Column("caller", String(96), nullable=False, index=True),
    Column("model", String(300), nullable=False, index=True),
    Column("repo", String(200), nullable=False),
    Column("commit", String(40), nullable=False),
    Column("backend", String(16), nullable=False),
    Column("kind", String(16), nullable=False),  # chat | completion | embedding
    Column("stream", Boolean, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float, nullable=True),
    Column("status", String(16), nullable=False),  # ok | error | cancelled
    Column("error", Text, nullable=True),
)


def new_id() -> str:
    """Time-ordered unique id: 48-bit milliseconds + 80 random bits, as 32 hex digits."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


@dataclass
class UsageRecord:
    caller: str
    model: str
    repo: str
    commit: str
    backend: str
    kind: str
    stream: bool
    id: str = field(default_factory=new_id)
    created_at: str = field(default_factory=utc_now_iso)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: str = "ok"
    error: str | None = None


class UsageLog:
    """Queue + writer thread; ``record`` never blocks a request on the database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.create(metadata)
        self._queue: queue.Queue[UsageRecord | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def record(self, entry: UsageRecord) -> None:
        self._queue.put(entry)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[UsageRecord] = []
            entry = self._queue.get()
            taken = 1
            if entry is None:
                stop = True
            else:
                batch.append(entry)
            deadline = time.monotonic() + BATCH_DELAY_S
            while not stop and len(batch) < BATCH_MAX:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                taken += 1
                if nxt is None:
                    stop = True
                else:
                    batch.append(nxt)
            if batch:
                self._write(batch)
            for _ in range(taken):
                self._queue.task_done()

    def _write(self, batch: list[UsageRecord]) -> None:
        for attempt in range(5):
            try:
                with self.db.write() as conn:
                    conn.execute(usage.insert(), [asdict(e) for e in batch])
                return
            except Exception:  # the database may be briefly locked; never drop billing records silently
                log.exception("writing %d usage records failed (attempt %d)", len(batch), attempt + 1)
                time.sleep(0.2 * (attempt + 1))

    def flush(self) -> None:
        """Wait until every queued record is in the database."""
        self._queue.join()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)

    def since(self, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Records written after ``seq`` (in writing order): what a biller has not seen yet."""
        with self.db.read() as conn:
            rows = conn.execute(select(usage).where(usage.c.seq > seq).order_by(usage.c.seq).limit(limit))
            return [dict(r._mapping) for r in rows]

    def query(
        self, caller: str | None = None, model: str | None = None, since: str | None = None, limit: int = 1000
    ) -> dict[str, Any]:
        conditions = []
        if caller:
            conditions.append(usage.c.caller == caller)
        if model:
            conditions.append((usage.c.model == model) | (usage.c.repo == model))
        if since:
            conditions.append(usage.c.created_at >= since)
        rows_query = select(usage).where(*conditions).order_by(usage.c.created_at.desc()).limit(limit)
        totals_query = select(
            func.count(),
            func.coalesce(func.sum(usage.c.prompt_tokens), 0),
            func.coalesce(func.sum(usage.c.completion_tokens), 0),
        ).where(*conditions)
        with self.db.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(rows_query)]
            count, prompt, completion = conn.execute(totals_query).one()
        return {
            "records": rows,
            "totals": {
                "calls": int(count),
                "prompt_tokens": int(prompt),
                "completion_tokens": int(completion),
                "total_tokens": int(prompt) + int(completion),
            },
        }
