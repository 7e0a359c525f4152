"""Per-suite leaderboards on the node, and breakthrough events for the mining layer.

Rules (decided here, documented in the README):

* Submissions are compared only with submissions on the **same held-out split** (its fingerprint): the
  same tasks, in the same order, so scores pair task by task.
* The **first** submission on a split becomes the record holder **without** a breakthrough event: there is
  no previous record to beat, and rewarding it would pay whoever is first to run any baseline.
* A later submission sets a new record - a **breakthrough** - when its paired-bootstrap improvement over
  the holder is at least the node's margin **and** the 95 % interval of the improvement excludes zero.
* A graph whose canonical hash equals an earlier submission's on the same suite never sets a record:
  the earlier submission wins the tie (copying the holder earns nothing).

Scores are the submitter's claim; the mining layer re-executes a sample before it pays a reward
(``list_breakthroughs`` is its read side, statuses start ``pending``).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    text,
)

from ..database import Database, utc_now_iso
from ..errors import ProtocolError
from .graph import GraphError, parse_graph
from .stats import bootstrap_ci, paired_bootstrap

DEFAULT_MARGIN = 0.02
MAX_JOBS = 1000  # evaluation jobs one submission may name
MAX_TASKS = 100_000

metadata = MetaData()

submissions = Table(
    "paths_submissions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("suite", String(255), nullable=False, index=True),
    Column("fingerprint", String(64), nullable=False),
    Column("graph_hash", String(64), nullable=False, index=True),
    Column("graph", Text, nullable=False),
    Column("designer", String(96), nullable=False),
    Column("scores", Text, nullable=False),  # JSON list of held-out per-task scores, in split order
    Column("n_tasks", Integer, nullable=False),
    Column("score", Float, nullable=False),
    Column("ci_low", Float, nullable=False),
    Column("ci_high", Float, nullable=False),
    Column("cost_per_task", BigInteger, nullable=False),  # micro-credits
    Column("record", Boolean, nullable=False, default=False),  # became the holder when submitted
    Column("idempotency_key", String(128), nullable=True),
    Column("jobs", Text, nullable=True),  # JSON list of the compute jobs that evaluated it (reward split)
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("designer", "idempotency_key", name="paths_submissions_idempotency"),
)

breakthroughs = Table(
    "paths_breakthroughs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("suite", String(255), nullable=False, index=True),
    Column("fingerprint", String(64), nullable=False),
    Column("submission_id", Integer, ForeignKey("paths_submissions.id"), nullable=False),
    Column("graph_hash", String(64), nullable=False),
    Column("designer", String(96), nullable=False),
    Column("previous_submission_id", Integer, ForeignKey("paths_submissions.id"), nullable=False),
    Column("improvement", Float, nullable=False),
    Column("ci_low", Float, nullable=False),
    Column("ci_high", Float, nullable=False),
    Column("margin", Float, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("created_at", String(32), nullable=False),
)


def margin_from_env() -> float:
    """The node's record margin: ``IOLLM_LEADERBOARD_MARGIN`` (a score difference, default 0.02)."""
    raw = os.environ.get("IOLLM_LEADERBOARD_MARGIN")
    try:
        value = float(raw) if raw else DEFAULT_MARGIN
    except ValueError:
        value = DEFAULT_MARGIN
    return min(max(value, 0.0), 1.0)


def _submission_json(row: Any, with_scores: bool = False) -> dict[str, Any]:
    out = {
        "id": row.id,
        "suite": row.suite,
        "fingerprint": row.fingerprint,
        "graph_hash": row.graph_hash,
        "designer": row.designer,
        "score": row.score,
        "ci_low": row.ci_low,
        "ci_high": row.ci_high,
        "cost_per_task": row.cost_per_task,
        "n_tasks": row.n_tasks,
        "record": bool(row.record),
        "created_at": row.created_at,
        "graph": json.loads(row.graph),
        "jobs": json.loads(row.jobs) if row.jobs else [],
    }
    if with_scores:
        out["scores"] = json.loads(row.scores)
    return out


def _breakthrough_json(row: Any) -> dict[str, Any]:
    return {
        k: getattr(row, k)
        for k in (
            "id",
            "suite",
            "fingerprint",
            "submission_id",
            "graph_hash",
            "designer",
            "previous_submission_id",
            "improvement",
            "ci_low",
            "ci_high",
            "margin",
            "status",
            "created_at",
        )
    }


def _check_scores(scores: Any) -> list[float]:
    if not isinstance(scores, list) or not scores:
        raise ProtocolError("scores must be a non-empty list of held-out per-task scores")
    if len(scores) > MAX_TASKS:
        raise ProtocolError(f"at most {MAX_TASKS} scores")
    out = []
    for value in scores:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
            raise ProtocolError("every score must be a number between 0 and 1")
        out.append(float(value))
    return out


def _lock(conn: Connection, suite: str) -> None:
    """Serialise submissions per suite. SQLite's write transactions already are (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"paths:{suite}".encode()).digest()[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _holder(conn: Connection, suite: str, fingerprint: str) -> Any:
    query = (
        select(submissions)
        .where(
            submissions.c.suite == suite,
            submissions.c.fingerprint == fingerprint,
            submissions.c.record.is_(True),
        )
        .order_by(submissions.c.id.desc())
        .limit(1)
    )
    return conn.execute(query).first()


def _outcome(conn: Connection, row: Any, reason: str | None = None) -> dict[str, Any]:
    event = conn.execute(select(breakthroughs).where(breakthroughs.c.submission_id == row.id)).first()
    return {
        "submission": _submission_json(row),
        "record": bool(row.record),
        "breakthrough": _breakthrough_json(event) if event else None,
        **({"reason": reason} if reason else {}),
    }


def submit(
    db: Database,
    suite: str,
    designer: str,
    graph: dict[str, Any],
    scores: list[float],
    fingerprint: str,
    cost_per_task: float,
    margin: float = DEFAULT_MARGIN,
    idempotency_key: str | None = None,
    jobs: list[str] | None = None,
) -> dict[str, Any]:
    """Record a held-out result and apply the record rules (module docstring); returns the submission,
    whether it holds the record now, the breakthrough event if any, and why not otherwise. Retrying with
    the same ``idempotency_key`` returns the first outcome and records nothing new."""
    if not suite or len(suite) > 255:
        raise ProtocolError("a suite name of 1 to 255 characters is needed")
    if not isinstance(fingerprint, str) or not fingerprint or len(fingerprint) > 64:
        raise ProtocolError("the held-out split's fingerprint (sha256 hex) is needed")
    try:
        graph_hash = parse_graph(graph).canonical_hash()
    except GraphError as exc:
        raise ProtocolError(f"invalid graph: {exc}") from exc
    values = _check_scores(scores)
    if not isinstance(cost_per_task, int | float) or cost_per_task < 0:
        raise ProtocolError("cost_per_task must be a non-negative number of micro-credits")
    if jobs is not None and (
        not isinstance(jobs, list)
        or len(jobs) > MAX_JOBS
        or not all(isinstance(j, str) and 0 < len(j) <= 64 for j in jobs)
    ):
        raise ProtocolError(f"jobs must be a list of at most {MAX_JOBS} job ids (the evaluation jobs)")
    score, low, high = bootstrap_ci(values)
    with db.write() as conn:
        _lock(conn, suite)
        if idempotency_key:
            earlier = conn.execute(
                select(submissions).where(
                    submissions.c.designer == designer, submissions.c.idempotency_key == idempotency_key
                )
            ).first()
            if earlier is not None:
                return {**_outcome(conn, earlier), "replayed": True}
        holder = _holder(conn, suite, fingerprint)
        same = conn.execute(
            select(submissions.c.id)
            .where(submissions.c.suite == suite, submissions.c.graph_hash == graph_hash)
            .order_by(submissions.c.id)
            .limit(1)
        ).first()
        event: dict[str, Any] | None = None
        if holder is not None and holder.n_tasks != len(values):
            raise ProtocolError(
                f"the held-out split {fingerprint[:12]} has {holder.n_tasks} tasks; {len(values)} scores were sent"
            )
        if holder is None:
            record, reason = (
                True,
                "first submission on this held-out split: it holds the record (no breakthrough)",
            )
        elif same is not None:
            record, reason = (
                False,
                f"the same graph was submitted before (#{same.id}); the earlier submission wins",
            )
        else:
            delta, d_low, d_high = paired_bootstrap(values, json.loads(holder.scores))
            record = delta >= margin and d_low > 0
            reason = (
                None
                if record
                else (
                    f"improvement {delta:+.4f} (95% CI {d_low:+.4f}..{d_high:+.4f}) over #{holder.id} does not beat "
                    f"the margin {margin} with an interval excluding 0"
                )
            )
            if record:
                event = {"improvement": delta, "ci_low": d_low, "ci_high": d_high}
        now = utc_now_iso()
        new_id = conn.execute(
            submissions.insert().values(
                suite=suite,
                fingerprint=fingerprint,
                graph_hash=graph_hash,
                graph=json.dumps(graph, sort_keys=True),
                designer=designer,
                scores=json.dumps(values),
                n_tasks=len(values),
                score=score,
                ci_low=low,
                ci_high=high,
                cost_per_task=round(cost_per_task),
                record=record,
                idempotency_key=idempotency_key,
                jobs=json.dumps(sorted(set(jobs))) if jobs else None,
                created_at=now,
            )
        ).inserted_primary_key[0]
        if event is not None:
            conn.execute(
                breakthroughs.insert().values(
                    suite=suite,
                    fingerprint=fingerprint,
                    submission_id=new_id,
                    graph_hash=graph_hash,
                    designer=designer,
                    previous_submission_id=holder.id,
                    margin=margin,
                    status="pending",
                    created_at=now,
                    **event,
                )
            )
        row = conn.execute(select(submissions).where(submissions.c.id == new_id)).first()
        return _outcome(conn, row, reason)


def leaderboard(db: Database, suite: str, fingerprint: str | None = None) -> dict[str, Any]:
    """The holder and the ranked submissions of one held-out split (default: the latest one used)."""
    with db.read() as conn:
        prints = [
            r.fingerprint
            for r in conn.execute(
                select(submissions.c.fingerprint, submissions.c.id)
                .where(submissions.c.suite == suite)
                .order_by(submissions.c.id.desc())
            )
        ]
        fingerprint = fingerprint or (prints[0] if prints else None)
        if fingerprint is None:
            return {
                "suite": suite,
                "fingerprint": None,
                "fingerprints": [],
                "holder": None,
                "submissions": [],
            }
        holder = _holder(conn, suite, fingerprint)
        rows = conn.execute(
            select(submissions)
            .where(submissions.c.suite == suite, submissions.c.fingerprint == fingerprint)
            .order_by(submissions.c.score.desc(), submissions.c.cost_per_task, submissions.c.id)
        ).all()
        events = conn.execute(
            select(breakthroughs)
            .where(breakthroughs.c.suite == suite, breakthroughs.c.fingerprint == fingerprint)
            .order_by(breakthroughs.c.id)
        ).all()
    return {
        "suite": suite,
        "fingerprint": fingerprint,
        "fingerprints": list(dict.fromkeys(prints)),
        "holder": _submission_json(holder) if holder else None,
        "submissions": [{"rank": i + 1, **_submission_json(r)} for i, r in enumerate(rows)],
        "breakthroughs": [_breakthrough_json(e) for e in events],
    }


def list_breakthroughs(
    db: Database, since_id: int | None = None, suite: str | None = None
) -> list[dict[str, Any]]:
    """Breakthrough events in order (ids increase); ``since_id`` returns only later ones. The mining
    layer reads these to pay rewards."""
    query = select(breakthroughs).order_by(breakthroughs.c.id)
    if since_id is not None:
        query = query.where(breakthroughs.c.id > since_id)
    if suite is not None:
        query = query.where(breakthroughs.c.suite == suite)
    with db.read() as conn:
        return [_breakthrough_json(r) for r in conn.execute(query)]


def get_submission(db: Database, submission_id: int) -> dict[str, Any] | None:
    """One submission with its per-task scores (for audits)."""
    with db.read() as conn:
        row = conn.execute(select(submissions).where(submissions.c.id == submission_id)).first()
    return _submission_json(row, with_scores=True) if row else None
