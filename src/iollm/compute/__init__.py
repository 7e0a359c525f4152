"""Decentralized GPU layer: provider identities, a Dask pool, jobs that survive provider loss, signed
compute metering and audits."""

from .identity import ProviderIdentity, init_identity, load_identity
from .kind import KINDS, JobKind, register_kind
from .metering import compute_by_provider
from .node import ComputeParts, build_compute, node_key
from .tables import metadata

__all__ = [
    "KINDS",
    "ComputeParts",
    "JobKind",
    "ProviderIdentity",
    "build_compute",
    "compute_by_provider",
    "init_identity",
    "load_identity",
    "metadata",
    "node_key",
    "register_kind",
]
