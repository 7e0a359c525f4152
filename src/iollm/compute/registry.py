"""Providers: registered by a signed request plus a verified benchmark, online while their worker is
connected, with a standing that audits lower when their results do not reproduce."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import func, select

from ..database import Database, utc_now_iso
from ..errors import NotFound, ProtocolError
from ..hub import Identity
from . import benchmark
from .identity import check_signed
from .tables import audits, jobs, meters, providers

DISPUTE_PENALTY = 0.25  # standing lost per disputed audit
MIN_STANDING = 0.25  # below this a provider is suspended and gets no work


class Providers:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._challenges: dict[str, benchmark.Challenge] = {}
        self._lock = threading.Lock()

    # -- registration ----------------------------------------------------------------------------

    def challenge(self) -> dict[str, Any]:
        made = benchmark.new_challenge()
        with self._lock:
            now = time.monotonic()
            for nonce in [
                n for n, c in self._challenges.items() if now - c.issued > benchmark.CHALLENGE_SECONDS
            ]:
                del self._challenges[nonce]
            self._challenges[made.nonce] = made
        return made.as_dict()

    def register(self, owner: Identity, body: dict[str, Any]) -> dict[str, Any]:
        """Check the signature, the nonce, the product and the claimed resources; then record the provider."""
        owner.require_user()
        payload, signature = body.get("payload"), body.get("signature")
        if not isinstance(payload, dict):
            raise ProtocolError("registration needs a signed payload")
        provider_id = str(payload.get("provider", ""))
        check_signed(provider_id, payload, signature, "registration")
        with self._lock:
            made = self._challenges.pop(str(payload.get("nonce", "")), None)
        if made is None:
            raise ProtocolError(
                "unknown or expired benchmark challenge: ask for a new one and answer within 5 minutes"
            )
        elapsed = time.monotonic() - made.issued  # measured here: a provider cannot claim to be faster
        if not benchmark.verify(made, str(body.get("product", ""))):
            raise ProtocolError(
                "the benchmark product is wrong (Freivalds check failed); registration refused"
            )
        cpus, gpus, memory = (
            int(payload.get("cpus", 1)),
            int(payload.get("gpus", 0)),
            int(payload.get("memory", 0)),
        )
        if cpus < 1 or gpus < 0 or memory < 0:
            raise ProtocolError("cpus must be at least 1; gpus and memory cannot be negative")
        speed = benchmark.gflops(made.size, elapsed)
        problem = benchmark.plausible(speed, cpus, gpus)
        if problem:
            raise ProtocolError(problem)
        now = utc_now_iso()
        row = {
            "name": str(payload.get("name") or provider_id[8:16])[:96],
            "owner": owner.name,
            "cpus": cpus,
            "gpus": gpus,
            "memory": memory,
            "benchmark_gflops": round(speed, 3),
            "last_seen": now,
        }
        with self.db.write() as conn:
            existing = conn.execute(select(providers.c.id).where(providers.c.id == provider_id)).first()
            if existing:
                conn.execute(providers.update().where(providers.c.id == provider_id).values(**row))
            else:
                conn.execute(
                    providers.insert().values(
                        id=provider_id, state="offline", standing=1.0, worker=None, registered_at=now, **row
                    )
                )
        return {"provider": provider_id, "benchmark_gflops": round(speed, 3), "cpus": cpus, "gpus": gpus}

    # -- state -----------------------------------------------------------------------------------

    def get(self, provider_id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(select(providers).where(providers.c.id == provider_id)).first()
        return dict(row._mapping) if row else None

    def by_worker(self, address: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(select(providers).where(providers.c.worker == address)).first()
        return dict(row._mapping) if row else None

    def online(self, provider_id: str, address: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                providers.update().where(providers.c.worker == address).values(worker=None, state="offline")
            )
            conn.execute(
                providers.update()
                .where(providers.c.id == provider_id)
                .values(worker=address, state="online", last_seen=utc_now_iso())
            )

    def offline(self, address: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                providers.update()
                .where(providers.c.worker == address)
                .values(worker=None, state="offline", last_seen=utc_now_iso())
            )

    def all_offline(self) -> None:
        """After a node restart nobody is connected yet."""
        with self.db.write() as conn:
            conn.execute(providers.update().values(worker=None, state="offline"))

    def lower_standing(self, provider_id: str, amount: float = DISPUTE_PENALTY) -> float:
        with self.db.write() as conn:
            row = conn.execute(select(providers.c.standing).where(providers.c.id == provider_id)).first()
            if row is None:
                return 0.0
            standing = max(0.0, round(row[0] - amount, 4))
            values: dict[str, Any] = {"standing": standing}
            if standing < MIN_STANDING:
                values["state"] = "suspended"
            conn.execute(providers.update().where(providers.c.id == provider_id).values(**values))
        return standing

    # -- views -----------------------------------------------------------------------------------

    def _stats(self, conn) -> dict[str, dict[str, Any]]:
        rows = conn.execute(
            select(
                meters.c.provider,
                func.count(func.distinct(meters.c.job_id)),
                func.coalesce(func.sum(meters.c.cpu_seconds), 0.0),
                func.coalesce(func.sum(meters.c.gpu_seconds), 0.0),
            ).group_by(meters.c.provider)
        ).all()
        disputed = dict(
            conn.execute(
                select(meters.c.provider, func.coalesce(func.sum(meters.c.cpu_seconds), 0.0))
                .where(meters.c.disputed.is_(True))
                .group_by(meters.c.provider)
            ).all()
        )
        return {
            r[0]: {
                "jobs_run": int(r[1]),
                "cpu_seconds": round(float(r[2]), 3),
                "gpu_seconds": round(float(r[3]), 3),
                "disputed_cpu_seconds": round(float(disputed.get(r[0], 0.0)), 3),
            }
            for r in rows
        }

    def list(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = [
                dict(r._mapping) for r in conn.execute(select(providers).order_by(providers.c.registered_at))
            ]
            stats = self._stats(conn)
        empty = {"jobs_run": 0, "cpu_seconds": 0.0, "gpu_seconds": 0.0, "disputed_cpu_seconds": 0.0}
        return [{**r, **stats.get(r["id"], empty)} for r in rows]

    def show(self, provider_id: str) -> dict[str, Any]:
        entry = next((p for p in self.list() if p["id"] == provider_id), None)
        if entry is None:
            raise NotFound(f"no provider {provider_id}; list them with `iollm providers`")
        with self.db.read() as conn:
            entry["audits"] = [
                dict(r._mapping)
                for r in conn.execute(
                    select(audits)
                    .where((audits.c.provider == provider_id) | (audits.c.auditor == provider_id))
                    .order_by(audits.c.id.desc())
                    .limit(50)
                )
            ]
            entry["recent_jobs"] = [
                r[0]
                for r in conn.execute(
                    select(func.distinct(meters.c.job_id)).where(meters.c.provider == provider_id).limit(50)
                )
            ]
            entry["jobs_known"] = conn.execute(select(func.count()).select_from(jobs)).scalar_one()
        return entry
