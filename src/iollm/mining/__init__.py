"""Joint mining: signed agreements, an exact double-entry ledger, revenue distribution, breakthrough
rewards and a tamper-evident Merkle log."""

from .merkle import Checkpoint, MerkleLog, inclusion_proof, verify_consistency, verify_inclusion
from .money import MICRO, allocate, format_credits, parse_credits, price_for_tokens, split_bps
from .signing import canonical_json, generate_key, public_key_id, sign, sign_json, verify, verify_json

__all__ = [
    "MICRO",
    "Checkpoint",
    "MerkleLog",
    "allocate",
    "canonical_json",
    "format_credits",
    "generate_key",
    "inclusion_proof",
    "parse_credits",
    "price_for_tokens",
    "public_key_id",
    "sign",
    "sign_json",
    "split_bps",
    "verify",
    "verify_consistency",
    "verify_inclusion",
    "verify_json",
]
