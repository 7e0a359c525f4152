"""Signed checkpoints of a Merkle log, in the C2SP ``tlog-checkpoint`` and ``signed-note`` formats: the
small signed text (origin, size, root, time) against which inclusion and consistency proofs are checked,
and the notes that carry a log's and its witnesses' Ed25519 signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import signing

__all__ = ["Checkpoint", "open_note", "sign_checkpoint", "sign_note", "utc_timestamp", "verify_checkpoint"]

_ROOT_SIZE = hashlib.sha256().digest_size  # a root is one RFC 6962 (SHA-256) hash

_SIZE_RE = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_TIMESTAMP_RE = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?Z", re.ASCII)
_NOTE_DASH = "\u2014 "  # signed-note signature lines start with an em dash and a space
_ALG_ED25519 = b"\x01"
_MAX_NOTE_SIGNATURES = 100


def utc_timestamp() -> str:
    """Now, as the RFC 3339 UTC text a checkpoint carries (second precision)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_timestamp(ts: str) -> None:
    match = _TIMESTAMP_RE.fullmatch(ts) if isinstance(ts, str) else None
    if match is None:
        raise ValueError(f"timestamp {ts!r} is not RFC 3339 UTC, like 2026-01-31T12:00:00Z")
    datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")  # rejects impossible dates


def _check_origin(origin: str) -> None:
    if not isinstance(origin, str) or not origin or origin != origin.strip() or not origin.isprintable():
        raise ValueError(f"checkpoint origin {origin!r} must be one non-empty printable line")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: which log (``origin``), how big, its root, and when.

    Its text form is a C2SP ``tlog-checkpoint`` body: origin, decimal size, standard base64 root,
    then the timestamp as one extension line, each ending in a newline. That text is what gets
    signed, so it is strictly canonical: :meth:`from_text` accepts only what :meth:`to_text` makes.
    """

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: str

    def __post_init__(self) -> None:
        _check_origin(self.origin)
        if not isinstance(self.tree_size, int) or isinstance(self.tree_size, bool) or self.tree_size < 0:
            raise ValueError("tree_size must be a non-negative int")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != _ROOT_SIZE:
            raise ValueError(f"root_hash must be {_ROOT_SIZE} bytes")
        _check_timestamp(self.timestamp)

    def to_text(self) -> str:
        root_b64 = base64.b64encode(self.root_hash).decode("ascii")
        return f"{self.origin}\n{self.tree_size}\n{root_b64}\n{self.timestamp}\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body; ``ValueError`` unless it is exactly canonical."""
        if not isinstance(text, str) or not text.endswith("\n"):
            raise ValueError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) != 4:
            raise ValueError("checkpoint text must have 4 lines: origin, size, root hash, timestamp")
        origin, size, root_b64, timestamp = lines
        if not _SIZE_RE.fullmatch(size):
            raise ValueError(f"tree size {size!r} is not a canonical decimal")
        try:
            root_hash = base64.b64decode(root_b64, validate=True)
        except binascii.Error as exc:
            raise ValueError("root hash is not base64") from exc
        checkpoint = cls(origin, int(size), root_hash, timestamp)
        if checkpoint.to_text() != text:
            raise ValueError("checkpoint text is not in canonical form")
        return checkpoint

    def sign(self, key: Ed25519PrivateKey) -> str:
        """Base64url Ed25519 signature over :meth:`to_text` (the same bytes a signed note signs)."""
        return signing.sign(key, self.to_text().encode("utf-8"))

    def verify(self, public_key_id: str, signature: str) -> bool:
        """True iff ``signature`` is :meth:`sign` of exactly this checkpoint; never raises."""
        return signing.verify(public_key_id, self.to_text().encode("utf-8"), signature)

    def to_signed_note(self, key: Ed25519PrivateKey, name: str) -> str:
        """This checkpoint as a C2SP signed note, readable by Go's ``sumdb/note`` and witnesses."""
        return sign_note(self.to_text(), key, name)

    @classmethod
    def from_signed_note(cls, note: str, name: str, public_key_id: str) -> Checkpoint:
        """Parse a signed note, requiring a valid signature by ``name``'s key ``public_key_id``."""
        return cls.from_text(open_note(note, name, public_key_id))


def sign_checkpoint(key: Ed25519PrivateKey, checkpoint: Checkpoint) -> str:
    return checkpoint.sign(key)


def verify_checkpoint(public_key_id: str, checkpoint: Checkpoint, signature: str) -> bool:
    return checkpoint.verify(public_key_id, signature)


def _note_key_hash(name: str, raw_public_key: bytes) -> bytes:
    """C2SP signed-note key id: first 4 bytes of SHA-256(name || LF || 0x01 || public key)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ALG_ED25519 + raw_public_key).digest()[:4]


def _check_note_name(name: str) -> None:
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() for c in name):
        raise ValueError(f"note key name {name!r} must be non-empty, without spaces or '+'")


def sign_note(text: str, key: Ed25519PrivateKey, name: str) -> str:
    """Sign ``text`` (ending in a newline) as a C2SP signed note with one Ed25519 signature."""
    _check_note_name(name)
    if not text.endswith("\n") or "\n\n" in text:
        raise ValueError("note text must end with a newline and contain no blank line")
    sig = key.sign(text.encode("utf-8"))
    blob = base64.b64encode(_note_key_hash(name, signing.raw_public_key(key)) + sig).decode("ascii")
    return f"{text}\n{_NOTE_DASH}{name} {blob}\n"


def open_note(note: str, name: str, public_key_id: str) -> str:
    """Return a signed note's text if one of its signatures is valid for ``(name, key)``.

    Signatures by other keys are ignored (witness cosignatures may ride along); ``ValueError``
    if the note is malformed or carries no valid signature from this key.
    """
    _check_note_name(name)
    raw_key = signing.raw_public_key(signing.public_key_from_id(public_key_id))
    split = note.rfind("\n\n") if isinstance(note, str) else -1
    if split < 0 or not note.endswith("\n"):
        raise ValueError("not a signed note: no blank line before the signatures")
    text, sig_lines = note[: split + 1], note[split + 2 : -1].split("\n")
    if len(sig_lines) > _MAX_NOTE_SIGNATURES:
        raise ValueError("too many signatures on the note")
    want_hash = _note_key_hash(name, raw_key)
    for line in sig_lines:
        blob = _note_signature_for(line, name, want_hash)
        if blob is not None and signing.verify(
            public_key_id, text.encode("utf-8"), signing.b64url_encode(blob)
        ):
            return text
    raise ValueError(f"the note has no valid signature from {name}")


def _note_signature_for(line: str, name: str, want_hash: bytes) -> bytes | None:
    """The raw signature on a ``— name base64`` line if it names this key; None otherwise."""
    if not line.startswith(_NOTE_DASH):
        raise ValueError(f"malformed note signature line {line!r}")
    parts = line[len(_NOTE_DASH) :].split(" ")
    if len(parts) != 2:
        raise ValueError(f"malformed note signature line {line!r}")
    line_name, b64 = parts
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise ValueError("note signature is not base64") from exc
    if line_name != name or len(blob) < 5 or blob[:4] != want_hash:
        return None
    return blob[4:]
