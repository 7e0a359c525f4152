"""Editor searches in the node's database: one row per search, written as it starts, as it progresses and
when it ends, so a restarted node still shows every search, and one that was running when its node stopped
is marked interrupted (with what it had found by then) instead of being lost."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update

from ..database import Database, utc_now_iso
from .tables import metadata, searches

INTERRUPTED = (
    "the node stopped while this search ran; shown is what it had found by then "
    "(search again to finish it: model calls already made come from the cache)"
)
LIST_LIMIT = 200


def _load(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


class SearchStore:
    """Reads and writes the ``editor_searches`` table for the searches of one node home (``node``)."""

    def __init__(self, db: Database, node: str) -> None:
        self.db = db
        self.node = node
        db.create(metadata)

    def interrupt_orphans(self) -> int:
        """Mark as interrupted this node's searches that a previous process left running; how many."""
        now = utc_now_iso()
        with self.db.write() as conn:
            found = conn.execute(
                update(searches)
                .where(searches.c.node == self.node, searches.c.state == "running")
                .values(state="interrupted", error=INTERRUPTED, updated_at=now, finished_at=now)
            )
            return found.rowcount or 0

    def insert(self, search_id: str, owner: str, config: dict[str, Any], preview: dict[str, Any]) -> None:
        now = utc_now_iso()
        with self.db.write() as conn:
            conn.execute(
                searches.insert().values(
                    id=search_id,
                    owner=owner,
                    node=self.node,
                    state="running",
                    phase="search",
                    done=0,
                    total=0,
                    config=json.dumps(config),
                    preview=json.dumps(preview),
                    result=None,
                    error=None,
                    created_at=now,
                    updated_at=now,
                    finished_at=None,
                )
            )

    def save(
        self,
        search_id: str,
        *,
        state: str,
        phase: str,
        done: int,
        total: int,
        result: dict[str, Any] | None,
        error: str | None,
        finished: bool = False,
    ) -> str:
        """Write a search's progress (and, when ``finished``, its end); returns the time written."""
        now = utc_now_iso()
        values: dict[str, Any] = {
            "state": state,
            "phase": phase,
            "done": done,
            "total": total,
            "error": error,
            "updated_at": now,
        }
        if result is not None:
            values["result"] = json.dumps(result)
        if finished:
            values["finished_at"] = now
        with self.db.write() as conn:
            conn.execute(update(searches).where(searches.c.id == search_id).values(**values))
        return now

    def get(self, search_id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(select(searches).where(searches.c.id == search_id)).mappings().first()
        return self._row(row, full=True) if row else None

    def list(self, owner: str | None, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
        """Newest first; ``owner`` None lists everyone's (for admins). Summaries: no result, no graph."""
        query = select(searches).order_by(searches.c.created_at.desc()).limit(limit)
        if owner is not None:
            query = query.where(searches.c.owner == owner)
        with self.db.read() as conn:
            rows = conn.execute(query).mappings().all()
        return [self._row(r, full=False) for r in rows]

    @staticmethod
    def _row(row: Any, full: bool) -> dict[str, Any]:
        config = _load(row["config"]) or {}
        out = {
            "id": row["id"],
            "owner": row["owner"],
            "state": row["state"],
            "phase": row["phase"],
            "done": row["done"],
            "total": row["total"],
            "started": row["created_at"],
            "updated": row["updated_at"],
            "finished": row["finished_at"],
            "error": row["error"],
            "suite": config.get("suite"),
        }
        if full:
            out.update(config=config, preview=_load(row["preview"]) or {}, result=_load(row["result"]))
        else:
            out["preview"] = _load(row["preview"]) or {}
            result = _load(row["result"]) or {}
            best = result.get("best") if isinstance(result, dict) else None
            out["best"] = {k: best.get(k) for k in ("name", "template")} if isinstance(best, dict) else None
        return out
