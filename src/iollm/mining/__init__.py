"""Joint mining: signed agreements, an exact double-entry ledger, revenue distribution, breakthrough
rewards and a tamper-evident Merkle log."""

from .checkpoint import Checkpoint
from .merkle import MerkleLog, inclusion_proof, verify_consistency, verify_inclusion

__all__ = [
    "Checkpoint",
    "MerkleLog",
    "inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]
