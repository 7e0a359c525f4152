"""Ed25519 signatures over canonical bytes, for agreements, meter records and log checkpoints.

Why these choices:

* Ed25519 (via ``cryptography``) is deterministic, fast (thousands of verifications per second in
  Python) and has no parameters to get wrong.
* Public keys travel as text ids (``ed25519:<base64url>``) so records can name their signer.
* Signatures are only meaningful over a canonical encoding, so :func:`canonical_json` fixes one:
  keys sorted by UTF-16 code units (as RFC 8785), no whitespace, UTF-8, and **no floats**: money and
  signed terms must be exact integers, and a float's text form is not stable across languages.
* :func:`sign_json` prefixes a domain tag, so a JSON signature can never be replayed as a signature
  over some other message format (such as a log checkpoint) made with the same key.
* Verification never raises: an attacker-controlled input must only ever produce ``False``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "JSON_DOMAIN",
    "KEY_ID_PREFIX",
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

KEY_ID_PREFIX = "ed25519:"
JSON_DOMAIN = b"iollm/signed-json/v1\n"
_MAX_JSON_INT = 2**63 - 1
_MIN_JSON_INT = -(2**63)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class CanonicalJSONError(TypeError):
    """A value cannot be encoded canonically (a float, a non-string key, an unsupported type)."""


class InsecureKeyFileError(PermissionError):
    """A private key file is readable or writable by users other than its owner."""


# --- base64url ---------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url: safe in URLs, headers, file names and JSON without escaping."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`: one text form per byte string, or ``ValueError``."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url text")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not unpadded base64url text") from exc
    if b64url_encode(data) != text:  # non-zero trailing bits: a second spelling of the same bytes
        raise ValueError("non-canonical base64url text")
    return data


# --- keys --------------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the OS CSPRNG."""
    return Ed25519PrivateKey.generate()


def raw_public_key(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 32 raw public key bytes (accepts a private key for convenience)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Text id of a public key: ``ed25519:`` + base64url of its 32 raw bytes."""
    return KEY_ID_PREFIX + b64url_encode(raw_public_key(key))


def public_key_from_id(key_id: str) -> Ed25519PublicKey:
    """Parse an id made by :func:`public_key_id`; ``ValueError`` if it is malformed."""
    if not isinstance(key_id, str) or not key_id.startswith(KEY_ID_PREFIX):
        raise ValueError(f"public key id must start with {KEY_ID_PREFIX!r}")
    raw = b64url_decode(key_id[len(KEY_ID_PREFIX) :])
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def save_private_key(
    key: Ed25519PrivateKey, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600, atomically.

    The file appears complete or not at all (temp file + fsync + link/rename in the same
    directory), is never world-readable even for an instant, and an existing key is never
    clobbered unless ``overwrite=True``: losing a signing key loses the identity behind it.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace the key")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = _write_private_temp(path.parent, pem)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _write_private_temp(directory: Path, data: bytes) -> Path:
    """Create a 0600 temp file next to the destination holding ``data``, flushed to disk."""
    fd, name = tempfile.mkstemp(prefix=".key-", suffix=".tmp", dir=directory)  # mkstemp uses 0600
    try:
        _write_all(fd, data)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte (``os.write`` may be partial), fsync, close."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable; best effort where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    """Publish ``tmp`` at ``path`` only if nothing is there (a hard link never replaces a name)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace the key") from None
    except OSError:  # file systems without hard links: an exclusive 0600 create is the next best
        _write_all(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp.read_bytes())


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read a key written by :func:`save_private_key` (PEM) or a raw 32-byte seed file.

    Refuses (``InsecureKeyFileError``) a file that group or others may access, as ssh does: a key
    that others could have read must be treated as compromised, not silently used.
    """
    path = Path(path)
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureKeyFileError(
            f"private key {path} has permissions {stat.S_IMODE(mode):04o}; "
            f"it must be accessible by its owner only (run: chmod 600 {path})"
        )
    data = path.read_bytes()
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


# --- signatures --------------------------------------------------------------------------------


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """Ed25519 signature of ``message`` as unpadded base64url (86 characters)."""
    return b64url_encode(key.sign(bytes(message)))


def verify(public_key_id: str, message: bytes, signature: str) -> bool:
    """True iff ``signature`` is a valid signature of ``message`` by the key ``public_key_id``.

    Never raises: malformed ids, signatures or messages simply do not verify.
    """
    try:
        pub = public_key_from_id(public_key_id)
        sig = b64url_decode(signature)
        if len(sig) != 64 or not isinstance(message, bytes | bytearray | memoryview):
            return False
        pub.verify(sig, bytes(message))  # raises InvalidSignature
    except Exception:  # a bad signature or any malformed input fails verification, never crashes
        return False
    return True


# --- canonical JSON ----------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, UTF-8, integers only.

    Accepts dicts with ``str`` keys, lists/tuples, ``str``, ``int`` (64-bit signed range, so Go,
    Rust and SQLite read it exactly), ``bool`` and ``None``. Floats raise
    :class:`CanonicalJSONError`: money and signed terms must be integer minor units.
    """
    text = json.dumps(_canonicalize(obj, "$"), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalJSONError("strings must be valid Unicode (found a lone surrogate)") from exc


def _canonicalize(value: Any, where: str) -> Any:
    """Validate ``value`` and rebuild dicts with keys in RFC 8785 order (UTF-16 code units)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not _MIN_JSON_INT <= value <= _MAX_JSON_INT:
            raise CanonicalJSONError(f"integer at {where} is outside the signed 64-bit range")
        return int(value)
    if isinstance(value, float):
        raise CanonicalJSONError(
            f"float at {where} is not allowed in canonical JSON; use integer minor units "
            "(e.g. micro-credits) or a decimal string"
        )
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise CanonicalJSONError(f"object key {k!r} at {where} is not a string")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return {k: _canonicalize(value[k], f"{where}.{k}") for k in keys}
    if isinstance(value, list | tuple):
        return [_canonicalize(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CanonicalJSONError(f"{type(value).__name__} at {where} has no canonical JSON form")


def sign_json(key: Ed25519PrivateKey, obj: Any) -> str:
    """Sign the domain-tagged canonical JSON of ``obj``."""
    return sign(key, JSON_DOMAIN + canonical_json(obj))


def verify_json(public_key_id: str, obj: Any, signature: str) -> bool:
    """True iff ``signature`` is :func:`sign_json` of ``obj`` by ``public_key_id``; never raises."""
    try:
        message = JSON_DOMAIN + canonical_json(obj)
    except (CanonicalJSONError, ValueError, TypeError, RecursionError):
        return False
    return verify(public_key_id, message, signature)
