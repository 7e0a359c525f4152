"""Ed25519 identities and signatures over canonical JSON: how providers, designers and the node prove
who said what (meter records, agreements, checkpoints)."""

from .ed25519 import (
    CanonicalJSONError,
    InsecureKeyFileError,
    b64url_decode,
    b64url_encode,
    canonical_json,
    generate_key,
    load_private_key,
    public_key_from_id,
    public_key_id,
    raw_public_key,
    save_private_key,
    sign,
    sign_json,
    verify,
    verify_json,
)

__all__ = [
    "CanonicalJSONError",
    "InsecureKeyFileError",
    "b64url_decode",
    "b64url_encode",
    "canonical_json",
    "generate_key",
    "load_private_key",
    "public_key_from_id",
    "public_key_id",
    "raw_public_key",
    "save_private_key",
    "sign",
    "sign_json",
    "verify",
    "verify_json",
]
