"""Jobs: idempotent submission, states, units handed to Dask, results persisted as each unit finishes,
meter records checked and countersigned, a sample of units audited on another provider.

The job table is the truth. A unit's result is written to the database the moment it arrives, so a
dead worker or a node restart never loses finished work; on restart every job that was running is
requeued and only its unfinished units run again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from .. import signing
from ..database import Database, utc_now_iso
from ..errors import Conflict, NotFound, ProtocolError
from ..hub import Accounts, Hub, Identity
from .cluster import Cluster
from .joblog import JobLogWriter
from .kind import KINDS
from .metering import Meters, result_digest
from .registry import Providers
from .tables import audits, jobs, logs, units
from .units import run_unit

log = logging.getLogger("iollm.compute")
MAX_ATTEMPTS = 4
TERMINAL = ("succeeded", "failed", "cancelled")


def new_job_id() -> str:
    return f"{int(time.time() * 1000):012x}{os.urandom(6).hex()}"


@dataclass
class JobServices:
    """What kinds may use on the node side."""

    hub: Hub
    accounts: Accounts
    node_url: str
    db: Database


class JobService:
    def __init__(
        self,
        db: Database,
        services: JobServices,
        providers: Providers,
        meters: Meters,
        audit_rate: float = 0.0,
    ) -> None:
        self.db = db
        self.services = services
        self.providers = providers
        self.meters = meters
        self.audit_rate = audit_rate
        self.cluster: Cluster | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._tokens: dict[str, tuple[str, int | None]] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None
        self._finished: dict[str, asyncio.Event] = {}  # long-polls waiting for a job to end
        self._loop: asyncio.AbstractEventLoop | None = None
        self.worker_logs = JobLogWriter(db)
        self.random = random.Random()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._loop = asyncio.get_running_loop()
        cluster.on_change.append(self._wake.set)
        await asyncio.to_thread(self.reconcile)
        cluster.client.subscribe_topic("iollm-job-log", self._on_log)  # type: ignore[union-attr]
        self._dispatcher = asyncio.create_task(self._dispatch())

    async def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for task in list(self._tasks.values()):
            task.cancel()

    def reconcile(self) -> int:
        """After a restart nothing is executing: every running job goes back to the queue (its finished
        units are kept), so no job stays running without a live worker."""
        with self.db.write() as conn:
            rows = conn.execute(select(jobs.c.id).where(jobs.c.state == "running")).all()
            for (job_id,) in rows:
                conn.execute(jobs.update().where(jobs.c.id == job_id).values(state="queued"))
                conn.execute(
                    logs.insert().values(
                        job_id=job_id,
                        at=utc_now_iso(),
                        line="node restarted: job requeued; finished units are kept",
                    )
                )
        return len(rows)

    # -- submission and queries ------------------------------------------------------------------

    def submit(
        self, caller: Identity, kind: str, spec: Any, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        submitter = caller.require_user()
        if caller.scope != "write":
            raise ProtocolError("submitting jobs needs a write token")
        handler = KINDS.get(kind)
        if handler is None:
            raise ProtocolError(f"unknown job kind {kind!r}; kinds: {', '.join(sorted(KINDS))}")
        if not isinstance(spec, dict):
            raise ProtocolError("a job spec is a JSON object")
        spec = handler.validate(spec, self.services, caller)
        spec_json = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        with self.db.write() as conn:
            if idempotency_key:
                row = conn.execute(
                    select(jobs).where(
                        (jobs.c.submitter == submitter) & (jobs.c.idempotency_key == idempotency_key)
                    )
                ).first()
                if row is not None:
                    if row.spec != spec_json or row.kind != kind:
                        raise Conflict(
                            f"idempotency key {idempotency_key!r} was used for a different job ({row.id})"
                        )
                    return self._view(dict(row._mapping))
            job_id = new_job_id()
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    kind=kind,
                    spec=spec_json,
                    state="queued",
                    submitter=submitter,
                    idempotency_key=idempotency_key,
                    created_at=utc_now_iso(),
                    attempts=0,
                )
            )
            conn.execute(
                logs.insert().values(job_id=job_id, at=utc_now_iso(), line=f"submitted by {submitter}")
            )
        self._wake.set()
        return self.get(job_id)

    def _view(self, row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row)
        row["spec"] = json.loads(row["spec"])
        row["result"] = json.loads(row["result"]) if row.get("result") else None
        row.pop("idempotency_key", None)
        return row

    def get(self, job_id: str) -> dict[str, Any]:
        with self.db.read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise NotFound(f"no job {job_id}; list jobs with `iollm jobs`")
            unit_rows = conn.execute(
                select(units.c.key, units.c.state, units.c.attempts, units.c.provider).where(
                    units.c.job_id == job_id
                )
            ).all()
        view = self._view(dict(row._mapping))
        view["units"] = {
            "total": len(unit_rows),
            "done": sum(1 for u in unit_rows if u.state == "done"),
            "providers": sorted({u.provider for u in unit_rows if u.provider}),
        }
        return view

    def list(
        self, state: str | None = None, submitter: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if state:
            query = query.where(jobs.c.state == state)
        if submitter:
            query = query.where(jobs.c.submitter == submitter)
        with self.db.read() as conn:
            return [self._view(dict(r._mapping)) for r in conn.execute(query)]

    def logs(self, job_id: str) -> list[dict[str, str]]:
        self.get(job_id)
        with self.db.read() as conn:
            rows = conn.execute(
                select(logs.c.at, logs.c.line).where(logs.c.job_id == job_id).order_by(logs.c.id)
            )
            return [{"at": r.at, "line": r.line} for r in rows]

    def log_line(self, job_id: str, line: str) -> None:
        with self.db.write() as conn:
            conn.execute(logs.insert().values(job_id=job_id, at=utc_now_iso(), line=line[:4000]))

    def _on_log(self, event: Any) -> None:
        """Runs on the event loop the scheduler shares: queue the line, never write it here."""
        _, message = event if isinstance(event, tuple) else (None, event)
        if isinstance(message, dict) and message.get("job"):
            self.worker_logs.add(str(message["job"]), f"[{message.get('unit')}] {message.get('line')}")

    async def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job once it has ended, or as it is after ``timeout`` seconds (a long-poll: a client learns
        that a job ended when it ends, without polling the node several times a second)."""
        event = self._finished.setdefault(job_id, asyncio.Event())
        try:
            job = await asyncio.to_thread(self.get, job_id)
        except NotFound:
            self._ended(job_id)
            raise
        if job["state"] in TERMINAL:
            self._ended(job_id)  # ended before (or on another run of the node): nothing will set it
            return job
        if timeout > 0:
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                pass
            job = await asyncio.to_thread(self.get, job_id)
        return job

    def _ended(self, job_id: str) -> None:
        event = self._finished.pop(job_id, None)
        if event is not None:
            event.set()

    def cancel(self, caller: Identity, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job["submitter"] != caller.require_user() and not caller.is_admin:
            raise ProtocolError("only the submitter (or an admin) may cancel a job")
        if job["state"] not in TERMINAL:
            self._set(job_id, state="cancelled", finished_at=utc_now_iso())
            self.log_line(job_id, f"cancelled by {caller.name}")
            task = self._tasks.pop(job_id, None)
            if task is not None:
                task.cancel()
            if self._loop is not None:  # a queued job has no task to end: wake its long-polls here
                self._loop.call_soon_threadsafe(self._ended, job_id)
        return self.get(job_id)

    def _set(self, job_id: str, **values: Any) -> None:
        with self.db.write() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))

    # -- execution -------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=2.0)
            except TimeoutError:
                pass
            self._wake.clear()
            queued = await asyncio.to_thread(self.list, "queued", None, 1000)
            for job in reversed(queued):  # oldest first
                if job["id"] not in self._tasks:
                    self._tasks[job["id"]] = asyncio.create_task(self._run_job(job))

    def _job_token(self, job: dict[str, Any]) -> str:
        """The job acts as its submitter: a write token that lives as long as the job."""
        if job["id"] not in self._tokens:
            secret = self.services.accounts.create_token(job["submitter"], f"job-{job['id']}", "write")
            token_id = next(
                (
                    t["id"]
                    for t in self.services.accounts.list_tokens(job["submitter"])
                    if t["name"] == f"job-{job['id']}" and not t["revoked"]
                ),
                None,
            )
            self._tokens[job["id"]] = (secret, token_id)
        return self._tokens[job["id"]][0]

    def _drop_token(self, job: dict[str, Any]) -> None:
        secret_and_id = self._tokens.pop(job["id"], None)
        if secret_and_id and secret_and_id[1] is not None:
            self.services.accounts.revoke_token(job["submitter"], secret_and_id[1])

    def _start(self, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Mark the job running and plan its units (once, kept across restarts) in one transaction: a
        single durable commit stands between a submission and its units going out. Returns key ->
        {state, attempts, ..., payload}."""
        planned = KINDS[job["kind"]].plan(job["id"], job["spec"], self.services)
        now = utc_now_iso()
        with self.db.write() as conn:
            existing = {
                r.key: dict(r._mapping)
                for r in conn.execute(select(units).where(units.c.job_id == job["id"]))
            }
            if not existing:
                rows = [
                    {"job_id": job["id"], "key": key, "state": "pending", "attempts": 0, "updated_at": now}
                    for key, _ in planned
                ]
                if rows:
                    conn.execute(units.insert(), rows)
                existing = {key: {"state": "pending", "attempts": 0} for key, _ in planned}
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job["id"])
                .values(
                    state="running",
                    started_at=job.get("started_at") or now,
                    attempts=int(job.get("attempts") or 0) + 1,
                )
            )
            todo = sum(1 for key, _ in planned if existing.get(key, {}).get("state") != "done")
            conn.execute(
                logs.insert().values(
                    job_id=job["id"], at=now, line=f"running {todo} of {len(planned)} unit(s)"
                )
            )
        return {key: {**existing.get(key, {}), "payload": payload} for key, payload in planned}

    async def _run_job(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        try:
            plan = await asyncio.to_thread(self._start, job)
            token = await asyncio.to_thread(self._job_token, job)
            pending = [
                self._run_unit(
                    job,
                    key,
                    {**entry["payload"], "node_url": self.services.node_url, "token": token},
                    int(entry.get("attempts") or 0),
                )
                for key, entry in plan.items()
                if entry.get("state") != "done"
            ]
            await asyncio.gather(*pending)
            await self.worker_logs.flush()  # a kind's finish may read what its units logged
            results = await asyncio.to_thread(self._results, job_id)
            outcome = await asyncio.to_thread(KINDS[job["kind"]].finish, job, results, self.services)
            await asyncio.to_thread(
                self._set, job_id, state="succeeded", finished_at=utc_now_iso(), result=json.dumps(outcome)
            )
            await asyncio.to_thread(self.log_line, job_id, "succeeded")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed", job_id)
            await asyncio.to_thread(
                self._set,
                job_id,
                state="failed",
                finished_at=utc_now_iso(),
                error=f"{exc.__class__.__name__}: {exc}",
            )
            await asyncio.to_thread(self.log_line, job_id, f"failed: {exc}")
        finally:
            self._tasks.pop(job_id, None)
            self._ended(job_id)
            await asyncio.to_thread(self._drop_token, job)

    def _results(self, job_id: str) -> dict[str, Any]:
        with self.db.read() as conn:
            rows = conn.execute(select(units.c.key, units.c.result).where(units.c.job_id == job_id)).all()
        return {r.key: json.loads(r.result) for r in rows if r.result}

    def _who_ran(self, outcome: Any) -> str:
        """The provider a unit's result is credited to: the verified owner of the worker its signed meter
        record names (the signer must be that owner, or ``Meters.check`` refuses the record), else the
        signer when that worker has left since. Reading it from the record saves a scheduler round trip
        per unit, on the loop the scheduler runs on."""
        meter = outcome.get("meter") if isinstance(outcome, dict) else None
        if not isinstance(meter, dict):
            return ""
        verified = self.cluster.workers.get(str(meter.get("worker", "")))  # type: ignore[union-attr]
        return verified or str(meter.get("provider", ""))

    async def _execute(
        self,
        job: dict[str, Any],
        key: str,
        payload: dict[str, Any],
        attempt: int,
        audit: bool = False,
        worker: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        handler = KINDS[job["kind"]]
        client = self.cluster.client  # type: ignore[union-attr]
        restrictions = {"workers": [worker], "allow_other_workers": False} if worker else {}
        cost = getattr(handler, "cost", None)
        future = client.submit(
            run_unit,
            job["kind"],
            job["id"],
            key,
            attempt,
            payload,
            audit,
            key=f"{job['id']}-{key}-{attempt}{'-audit' if audit else ''}",
            resources=handler.resources(payload),
            # the longest units first, so none of them is left to run alone at the end of the job
            priority=int(cost(payload)) if cost is not None else 0,
            pure=False,
            **restrictions,
        )
        try:
            outcome = await future
        finally:
            future.release()
        return outcome, self._who_ran(outcome)

    async def _run_unit(self, job: dict[str, Any], key: str, payload: dict[str, Any], attempts: int) -> None:
        job_id = job["id"]
        while True:
            attempt = attempts + 1
            try:
                outcome, provider = await self._execute(job, key, payload, attempt)
                await asyncio.to_thread(self._accept, job, key, attempt, outcome, provider)
                if self.audit_rate and self.random.random() < self.audit_rate:
                    await self._audit(job, key, payload, outcome, provider)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempts = attempt
                await asyncio.to_thread(self._unit_failed, job_id, key, attempt, exc)
                if attempt >= MAX_ATTEMPTS:
                    raise RuntimeError(f"unit {key} failed {attempt} times; last error: {exc}") from exc
                await asyncio.sleep(min(2.0, 0.2 * attempt))

    def _unit_failed(self, job_id: str, key: str, attempt: int, exc: Exception) -> None:
        with self.db.write() as conn:
            conn.execute(
                units.update()
                .where((units.c.job_id == job_id) & (units.c.key == key))
                .values(attempts=attempt, updated_at=utc_now_iso())
            )
        self.log_line(job_id, f"[{key}] attempt {attempt} failed: {exc.__class__.__name__}: {exc}")

    def _accept(
        self, job: dict[str, Any], key: str, attempt: int, outcome: dict[str, Any], provider: str
    ) -> None:
        """The unit's meter record and its result in one durable commit (one fsync per unit, not two):
        a unit is never done without its compute billed, nor billed twice."""
        row = self.meters.check(outcome, provider)  # raises on a bad signature: the attempt fails
        with self.db.write() as conn:
            self.meters.store(conn, row)
            conn.execute(
                units.update()
                .where((units.c.job_id == job["id"]) & (units.c.key == key))
                .values(
                    state="done",
                    attempts=attempt,
                    provider=provider,
                    result=json.dumps(outcome["result"]),
                    digest=result_digest(outcome["result"]),
                    updated_at=utc_now_iso(),
                )
            )

    async def _audit(
        self, job: dict[str, Any], key: str, payload: dict[str, Any], outcome: dict, provider: str
    ) -> None:
        """Re-run the unit on another provider; on disagreement a third run decides who is wrong."""
        worker = outcome["meter"]["worker"]
        other = self.cluster.other_worker(worker)  # type: ignore[union-attr]
        if other is None:
            return
        second, auditor = await self._execute(job, key, payload, 1, audit=True, worker=other)
        await asyncio.to_thread(self.meters.record, second, auditor)
        view = getattr(KINDS[job["kind"]], "audit_view", result_digest)
        matched = view(second["result"]) == view(outcome["result"])
        referee = None
        if not matched:
            third_worker = next(
                (
                    a
                    for a, p in self.cluster.workers.items()  # type: ignore[union-attr]
                    if p not in (provider, auditor)
                ),
                None,
            )
            if third_worker is not None:
                third, referee = await self._execute(job, key, payload, 2, audit=True, worker=third_worker)
                wrong = provider if view(third["result"]) == view(second["result"]) else auditor
            else:
                wrong = provider  # no referee available: the result on record is the one in doubt
            await asyncio.to_thread(self.meters.dispute, job["id"], wrong)
            if wrong == provider:  # the result on record is the wrong one: keep the reproduced one
                await asyncio.to_thread(self._replace_result, job["id"], key, second["result"], auditor)
            await asyncio.to_thread(self.providers.lower_standing, wrong)
            await asyncio.to_thread(self.log_line, job["id"], f"[{key}] audit mismatch: {wrong} disputed")
        await asyncio.to_thread(self._record_audit, job["id"], key, provider, auditor, matched, referee)

    def _replace_result(self, job_id: str, key: str, result: Any, provider: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                units.update()
                .where((units.c.job_id == job_id) & (units.c.key == key))
                .values(
                    result=json.dumps(result),
                    digest=result_digest(result),
                    provider=provider,
                    updated_at=utc_now_iso(),
                )
            )

    def _record_audit(
        self, job_id: str, key: str, provider: str, auditor: str, matched: bool, referee: str | None
    ) -> None:
        with self.db.write() as conn:
            conn.execute(
                audits.insert().values(
                    job_id=job_id,
                    unit=key,
                    provider=provider,
                    auditor=auditor,
                    matched=matched,
                    referee=referee,
                    created_at=utc_now_iso(),
                )
            )

    def node_key_id(self) -> str:
        return signing.public_key_id(self.meters.node_key)
