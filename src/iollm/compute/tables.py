"""The compute layer's tables: providers, jobs, their units of work, meter records, audits.

The job table is the truth; Dask only executes. After a node restart these rows are reconciled:
no job stays ``running`` without a live worker behind it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

providers = Table(
    "compute_providers",
    metadata,
    Column("id", String(80), primary_key=True),  # "ed25519:<base64url public key>"
    Column("name", String(96), nullable=False),
    Column("owner", String(96), nullable=True),  # hub user who registered it (the token's user)
    Column("cpus", Integer, nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("memory", BigInteger, nullable=False),
    Column("benchmark_gflops", Float, nullable=False),
    Column("state", String(16), nullable=False),  # online | offline | suspended
    Column("standing", Float, nullable=False),  # 1.0 = clean record; audits lower it
    Column("worker", String(200), nullable=True),  # Dask worker address while online
    Column("registered_at", String(32), nullable=False),
    Column("last_seen", String(32), nullable=False),
)

jobs = Table(
    "compute_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(24), nullable=False),
    Column("spec", Text, nullable=False),  # canonical JSON
    Column("state", String(16), nullable=False),  # queued | running | succeeded | failed | cancelled
    Column("submitter", String(96), nullable=False),
    Column("idempotency_key", String(200), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("started_at", String(32), nullable=True),
    Column("finished_at", String(32), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("result", Text, nullable=True),
    Column("error", Text, nullable=True),
    UniqueConstraint("submitter", "idempotency_key", name="compute_jobs_idempotency"),
)

units = Table(
    "compute_units",
    metadata,
    Column("job_id", String(32), ForeignKey("compute_jobs.id"), primary_key=True),
    Column("key", String(100), primary_key=True),  # unit of work within the job
    Column("state", String(16), nullable=False),  # pending | done | failed
    Column("attempts", Integer, nullable=False),
    Column("provider", String(80), nullable=True),
    Column("result", Text, nullable=True),
    Column("digest", String(64), nullable=True),  # sha256 of the canonical result (for audits)
    Column("updated_at", String(32), nullable=False),
)

logs = Table(
    "compute_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=False, index=True),
    Column("at", String(32), nullable=False),
    Column("line", Text, nullable=False),
)

meters = Table(
    "compute_meters",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("job_id", String(32), nullable=False, index=True),
    Column("unit", String(100), nullable=False),
    Column("provider", String(80), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("started_at", String(32), nullable=False),
    Column("ended_at", String(32), nullable=False),
    Column("cpu_seconds", Float, nullable=False),
    Column("gpu_seconds", Float, nullable=False),
    Column("payload", Text, nullable=False),  # the canonical JSON both parties signed
    Column("provider_signature", String(120), nullable=False),
    Column("node_signature", String(120), nullable=False),
    Column("audit", Boolean, nullable=False),  # an audit re-execution (paid, but not the job's result)
    Column("disputed", Boolean, nullable=False),
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("job_id", "unit", "audit", name="compute_meters_once"),  # a retried unit is billed once
)

audits = Table(
    "compute_audits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=False, index=True),
    Column("unit", String(100), nullable=False),
    Column("provider", String(80), nullable=False),  # whose result was checked
    Column("auditor", String(80), nullable=False),  # who re-executed it
    Column("matched", Boolean, nullable=False),
    Column("referee", String(80), nullable=True),  # who broke the tie when they disagreed
    Column("created_at", String(32), nullable=False),
)
