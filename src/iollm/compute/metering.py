"""Meter records: compute-seconds per (job, unit, provider), signed by the provider on its worker and
countersigned by the node. One record per unit (and one per audit of it): a retried unit is never
billed twice, whatever Dask did underneath."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, select

from .. import signing
from ..database import Database, utc_now_iso
from ..errors import ProtocolError
from .identity import check_signed
from .tables import meters

# Integers only (microseconds): signed payloads never contain floats.
METER_FIELDS = (
    "job",
    "unit",
    "attempt",
    "provider",
    "worker",
    "started_at",
    "ended_at",
    "cpu_us",
    "gpu_us",
    "result_digest",
    "audit",
)


def result_digest(result: Any) -> str:
    """The digest two providers must agree on for the same unit (canonical JSON, floats allowed)."""
    return hashlib.sha256(json.dumps(result, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def new_meter_id() -> str:
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


class Meters:
    def __init__(self, db: Database, node_key: Ed25519PrivateKey) -> None:
        self.db = db
        self.node_key = node_key
        self.node_id = signing.public_key_id(node_key)

    def record(self, outcome: dict[str, Any], expected_provider: str) -> dict[str, Any] | None:
        """Verify and store a unit's meter record; returns the stored row, or None if this unit was
        already metered (a duplicate attempt)."""
        row = self.check(outcome, expected_provider)
        with self.db.write() as conn:
            return row if self.store(conn, row) else None

    def check(self, outcome: dict[str, Any], expected_provider: str) -> dict[str, Any]:
        """The row to store for a unit's meter record, verified and countersigned; raises on a record
        that is malformed, signed by someone else or does not match its result."""
        meter, signature = outcome.get("meter"), outcome.get("signature")
        if not isinstance(meter, dict) or set(meter) != set(METER_FIELDS):
            raise ProtocolError("malformed meter record")
        if meter["provider"] != expected_provider:
            raise ProtocolError(
                f"meter record names {meter['provider']} but worker belongs to {expected_provider}"
            )
        check_signed(meter["provider"], meter, signature, "meter record")
        if meter["result_digest"] != result_digest(outcome.get("result")):
            raise ProtocolError("meter record does not match the result it was returned with")
        countersigned = signing.sign_json(self.node_key, {"meter": meter, "provider_signature": signature})
        return {
            "id": new_meter_id(),
            "job_id": meter["job"],
            "unit": meter["unit"],
            "provider": meter["provider"],
            "attempt": int(meter["attempt"]),
            "started_at": meter["started_at"],
            "ended_at": meter["ended_at"],
            "cpu_seconds": int(meter["cpu_us"]) / 1e6,
            "gpu_seconds": int(meter["gpu_us"]) / 1e6,
            "payload": signing.canonical_json(meter).decode(),
            "provider_signature": signature,
            "node_signature": countersigned,
            "audit": bool(meter["audit"]),
            "disputed": False,
            "created_at": utc_now_iso(),
        }

    @staticmethod
    def store(conn: Connection, row: dict[str, Any]) -> bool:
        """Insert a checked row inside the caller's transaction (so a unit's meter record and its result
        are one commit); False when the unit was already metered (a retried unit is billed once)."""
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        result = conn.execute(insert(meters).values(**row).on_conflict_do_nothing())
        return bool(result.rowcount)

    def dispute(self, job_id: str, provider_id: str) -> int:
        """Mark a provider's metered compute for a job as disputed (not paid)."""
        with self.db.write() as conn:
            result = conn.execute(
                meters.update()
                .where((meters.c.job_id == job_id) & (meters.c.provider == provider_id))
                .values(disputed=True)
            )
        return int(result.rowcount or 0)

    def list(
        self, job_id: str | None = None, provider: str | None = None, since: str | None = None
    ) -> list[dict]:
        query = select(meters).order_by(meters.c.created_at)
        if job_id:
            query = query.where(meters.c.job_id == job_id)
        if provider:
            query = query.where(meters.c.provider == provider)
        if since:
            query = query.where(meters.c.created_at > since)
        with self.db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


def compute_by_provider(
    db: Database, job_ids: list[str] | None = None, model: str | None = None, submitter: str | None = None
) -> dict[str, int]:
    """Undisputed metered compute (CPU + GPU microseconds) per provider, for some jobs or for every job
    whose spec names ``model`` (its base, output, model or evaluated models), optionally only jobs that
    ``submitter`` submitted (so nobody can point rewards at other people's jobs). What investors are paid by."""
    from .tables import jobs

    query = select(meters.c.provider, meters.c.cpu_seconds, meters.c.gpu_seconds).where(
        meters.c.disputed.is_(False)
    )
    if job_ids is not None:
        if not job_ids:
            return {}
        query = query.where(meters.c.job_id.in_(job_ids))
    if model is not None:
        related = select(jobs.c.id).where(jobs.c.spec.like(f'%"{model}"%'))
        query = query.where(meters.c.job_id.in_(related))
    if submitter is not None:
        query = query.where(meters.c.job_id.in_(select(jobs.c.id).where(jobs.c.submitter == submitter)))
    totals: dict[str, int] = {}
    with db.read() as conn:
        for provider, cpu, gpu in conn.execute(query):
            totals[provider] = totals.get(provider, 0) + round((cpu + gpu) * 1_000_000)
    return totals
