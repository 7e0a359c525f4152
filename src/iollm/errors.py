"""The error tree of every layer (the package's ground floor): each error has an HTTP status, a stable
code and a message that says what to do.

The node turns them into ``{"error": {"message", "type", "code"}}``; the client turns that back into
the same exception class, so callers handle one set of errors whether local or remote.
"""

from __future__ import annotations

from typing import Any


class IollmError(Exception):
    """Base of every error the node can send. Subclasses fix ``status`` and ``code``."""

    status = 500
    code = "internal_error"
    type = "server_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "type": self.type, "param": None, "code": self.code}
        body.update(self.details)
        return {"error": body}


class ProtocolError(IollmError, ValueError):
    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class UnsupportedProtocol(ProtocolError):
    code = "unsupported_protocol"


class PayloadTooLarge(ProtocolError):
    status = 413
    code = "payload_too_large"


class Unauthorized(IollmError):
    status = 401
    code = "unauthorized"
    type = "authentication_error"


class Forbidden(IollmError):
    status = 403
    code = "forbidden"
    type = "permission_error"


class NotFound(IollmError):
    status = 404
    code = "not_found"
    type = "not_found_error"


class RepoNotFound(NotFound):
    code = "RepoNotFound"


class RevisionNotFound(NotFound):
    code = "RevisionNotFound"


class EntryNotFound(NotFound):
    code = "EntryNotFound"


class Conflict(IollmError):
    status = 409
    code = "conflict"
    type = "conflict_error"


class MissingChunks(ProtocolError):
    code = "missing_chunks"


class IntegrityError(IollmError):
    """Bytes that do not match their hash: never stored, never trusted."""

    status = 422
    code = "integrity_error"
    type = "invalid_request_error"


class Unavailable(IollmError):
    status = 503
    code = "unavailable"


_BY_CODE: dict[str, type[IollmError]] = {}


def _register(cls: type[IollmError]) -> None:
    _BY_CODE.setdefault(cls.code, cls)
    for sub in cls.__subclasses__():
        _register(sub)


_register(IollmError)


def error_from_json(status: int, body: Any) -> IollmError:
    """Rebuild the exception a node sent (unknown codes fall back by HTTP status)."""
    info = body.get("error") if isinstance(body, dict) else None
    if isinstance(info, dict):
        message = str(info.get("message", "")) or f"HTTP {status}"
        code = str(info.get("code", ""))
    else:
        message = str(info) if info else f"HTTP {status}"
        code = ""
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = {
            400: ProtocolError,
            401: Unauthorized,
            403: Forbidden,
            404: NotFound,
            409: Conflict,
            413: PayloadTooLarge,
            422: IntegrityError,
            503: Unavailable,
        }.get(status, IollmError)
    err = cls(message)
    err.status = status
    if code and code != cls.code:  # a code this client does not know (a newer node): keep it
        err.code = code
    return err
