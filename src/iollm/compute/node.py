"""The compute layer as the node runs it: registry, meters, the Dask pool and the job service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import signing
from ..database import Database
from ..hub import Accounts, Hub
from .cluster import Cluster
from .jobs import JobService, JobServices
from .metering import Meters
from .registry import Providers
from .tables import metadata


def node_key(home: Path) -> Ed25519PrivateKey:
    """The node's own Ed25519 key (countersigns meter records; signs ledger checkpoints), made once."""
    path = home / "node.key"
    if not path.exists():
        signing.save_private_key(signing.generate_key(), path)
    return signing.load_private_key(path)


@dataclass
class ComputeParts:
    providers: Providers
    meters: Meters
    cluster: Cluster
    jobs: JobService

    async def start(self) -> None:
        await self.cluster.start()
        await self.jobs.start(self.cluster)

    async def close(self) -> None:
        await self.jobs.close()
        await self.cluster.close()


def build_compute(
    db: Database,
    hub: Hub,
    accounts: Accounts,
    key: Ed25519PrivateKey,
    node_url: str,
    scheduler: str | None = None,
    scheduler_port: int = 0,
    audit_rate: float = 0.0,
) -> ComputeParts:
    from . import kinds  # noqa: F401 - every kind in compute/kinds registers itself

    db.create(metadata)
    providers = Providers(db)
    meters = Meters(db, key)
    cluster = Cluster(providers, external=scheduler, port=scheduler_port)
    jobs = JobService(db, JobServices(hub, accounts, node_url, db), providers, meters, audit_rate)
    return ComputeParts(providers, meters, cluster, jobs)
