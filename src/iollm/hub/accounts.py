"""Users, organisations and bearer tokens; who may read and write which namespace.

Tokens are stored only as SHA-256 digests, so a leaked database does not leak credentials. A token is
named by its id or its name (both shown by ``iollm token list``), never by its secret. Revoking one
marks it (``revoked``, ``revoked_at``) instead of deleting it: it is refused from then on, and cannot
be restored.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import inspect, select
from sqlalchemy.exc import DBAPIError

from ..database import Database, utc_now_iso
from ..errors import Conflict, Forbidden, NotFound, ProtocolError, Unauthorized
from ..protocol import check_name
from .names import check_namespace
from .tables import memberships, tokens, users

TOKEN_PREFIX = "iollm_"
_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Identity:
    """The caller of one request: anonymous, or a user with a token scope and org roles."""

    name: str | None = None
    user_id: int | None = None
    is_admin: bool = False
    scope: str = "none"  # "read" | "write" | "none" (anonymous)
    orgs: dict[str, str] = field(default_factory=dict)  # org name -> role

    @property
    def anonymous(self) -> bool:
        return self.name is None

    def can_read(self, namespace: str) -> bool:
        """May read private repositories of ``namespace``."""
        return not self.anonymous and (namespace == self.name or namespace in self.orgs or self.is_admin)

    def can_write(self, namespace: str) -> bool:
        if self.anonymous or self.scope != "write":
            return False
        return namespace == self.name or self.orgs.get(namespace) in ("admin", "write")

    def require_user(self) -> str:
        if self.name is None:
            raise Unauthorized(
                "this needs a token: pass --token or set IOLLM_TOKEN (Authorization: Bearer ...)"
            )
        return self.name

    def require_write(self, namespace: str) -> None:
        self.require_user()
        if self.scope != "write":
            raise Forbidden("this token is read-only; create a write token with `iollm token create NAME`")
        if not self.can_write(namespace):
            raise Forbidden(
                f"{self.name!r} may not write to namespace {namespace!r}: only its owner "
                "(or a member with write role of that organisation) may"
            )

    def require_admin(self) -> None:
        self.require_user()
        if not self.is_admin:
            raise Forbidden("this needs an admin token (the node's `local` user)")


ANONYMOUS = Identity()

# What a token's owner may see of it (everything but the digest).
_TOKEN_FIELDS = (
    tokens.c.id,
    tokens.c.name,
    tokens.c.scope,
    tokens.c.created_at,
    tokens.c.revoked,
    tokens.c.revoked_at,
)


def _add_revoked_at(db: Database) -> None:
    """One-time upgrade of a database made before tokens had ``revoked_at`` (``create_all`` adds
    tables, not columns). Safe when two processes open the same database at once."""
    if "revoked_at" in {c["name"] for c in inspect(db.engine).get_columns(tokens.name)}:
        return
    try:
        with db.write() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {tokens.name} ADD COLUMN revoked_at VARCHAR(32)")
    except DBAPIError:
        if "revoked_at" not in {c["name"] for c in inspect(db.engine).get_columns(tokens.name)}:
            raise


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Accounts:
    """Creates users, orgs and tokens and resolves a bearer token to an ``Identity``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, Identity]] = {}
        self._cache_lock = threading.Lock()
        self._generation = 0  # bumped by every change that can invalidate a cached identity
        _add_revoked_at(db)

    # -- users and orgs --------------------------------------------------------------------------

    def _user_row(self, conn, name: str):
        return conn.execute(select(users).where(users.c.name == name)).first()

    def exists(self, name: str) -> bool:
        with self.db.read() as conn:
            return self._user_row(conn, name) is not None

    def create_user(self, name: str, is_admin: bool = False, kind: str = "user") -> int:
        check_name(name, "user name" if kind == "user" else "organisation name")
        check_namespace(name)
        with self.db.write() as conn:
            if self._user_row(conn, name) is not None:
                raise Conflict(f"{name!r} already exists (user and organisation names share one space)")
            result = conn.execute(
                users.insert().values(name=name, kind=kind, is_admin=is_admin, created_at=utc_now_iso())
            )
            return int(result.inserted_primary_key[0])

    def create_org(self, name: str, owner: str) -> None:
        org_id = self.create_user(name, kind="org")
        self.add_member(name, owner, "admin", _org_id=org_id)

    def add_member(self, org: str, user: str, role: str = "write", _org_id: int | None = None) -> None:
        if role not in ("admin", "write", "read"):
            raise ProtocolError(f"role must be admin, write or read, not {role!r}")
        with self.db.write() as conn:
            org_row = self._user_row(conn, org)
            user_row = self._user_row(conn, user)
            if org_row is None or org_row.kind != "org":
                raise NotFound(f"organisation {org!r} does not exist; create it with `iollm org create`")
            if user_row is None or user_row.kind != "user":
                raise NotFound(f"user {user!r} does not exist; create it with `iollm user create`")
            conn.execute(
                memberships.delete().where(
                    (memberships.c.org_id == org_row.id) & (memberships.c.user_id == user_row.id)
                )
            )
            conn.execute(memberships.insert().values(org_id=org_row.id, user_id=user_row.id, role=role))
        self._forget_cache()

    def org_admin_check(self, caller: Identity, org: str) -> None:
        if caller.orgs.get(org) != "admin" and not caller.is_admin:
            raise Forbidden(f"only an admin of {org!r} may change its members")

    def list_users(self) -> list[dict[str, object]]:
        with self.db.read() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).all()
            members = conn.execute(select(memberships)).all()
        names = {r.id: r.name for r in rows}
        out = []
        for r in rows:
            entry: dict[str, object] = {"name": r.name, "kind": r.kind, "is_admin": r.is_admin}
            if r.kind == "org":
                entry["members"] = {names[m.user_id]: m.role for m in members if m.org_id == r.id}
            out.append(entry)
        return out

    # -- tokens ----------------------------------------------------------------------------------

    def create_token(self, user: str, name: str, scope: str = "write") -> str:
        """A new secret for ``user``; only its digest is kept."""
        return str(self.create_token_record(user, name, scope)["token"])

    def create_token_record(self, user: str, name: str, scope: str = "write") -> dict[str, object]:
        """A new token for ``user``: its id, name, scope and secret (the secret is shown only now)."""
        if scope not in ("read", "write"):
            raise ProtocolError(f"scope must be read or write, not {scope!r}")
        if not name or len(name) > 96:
            raise ProtocolError("a token needs a name of 1-96 characters")
        secret = new_secret()
        created_at = utc_now_iso()
        with self.db.write() as conn:
            row = self._user_row(conn, user)
            if row is None or row.kind != "user":
                raise NotFound(f"user {user!r} does not exist")
            result = conn.execute(
                tokens.insert().values(
                    user_id=row.id,
                    name=name,
                    digest=token_digest(secret),
                    scope=scope,
                    created_at=created_at,
                    revoked=False,
                )
            )
            token_id = int(result.inserted_primary_key[0])
        return {
            "id": token_id,
            "user": user,
            "name": name,
            "scope": scope,
            "created_at": created_at,
            "token": secret,
        }

    def list_tokens(self, user: str) -> list[dict[str, object]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(*_TOKEN_FIELDS)
                .join(users, users.c.id == tokens.c.user_id)
                .where(users.c.name == user)
                .order_by(tokens.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    def revoke(self, user: str, ref: str | int) -> dict[str, object]:
        """Revoke one of ``user``'s tokens, named by id or by name, and return its record.

        A string of digits is an id first (a token named "7" is revoked by name only when ``user``
        has no token 7). A name must pick one live token; several live tokens of that name are a
        conflict, to be revoked by id. Revoking a revoked token changes nothing (the first
        ``revoked_at`` stays). Another user's token is answered exactly like one that does not exist."""
        text = str(ref)
        with self.db.write() as conn:
            row = self._user_row(conn, user)
            owner = row.id if row is not None and row.kind == "user" else -1
            owned = select(*_TOKEN_FIELDS).where(tokens.c.user_id == owner)
            target = None
            if text.isascii() and text.isdigit() and len(text) <= 18:
                target = conn.execute(owned.where(tokens.c.id == int(text))).first()
            if target is None:
                named = conn.execute(owned.where(tokens.c.name == text).order_by(tokens.c.id)).all()
                live = [t for t in named if not t.revoked]
                if len(live) > 1:
                    ids = ", ".join(str(t.id) for t in live)
                    raise Conflict(
                        f"{user!r} has {len(live)} live tokens named {text!r} (ids {ids}): "
                        "revoke one by its id (`iollm token list` shows them)"
                    )
                target = live[0] if live else (named[-1] if named else None)
            if target is None:
                raise NotFound(
                    f"{user!r} has no token with the id or name {text!r}; `iollm token list` shows them"
                )
            record = dict(target._mapping)
            if not target.revoked:
                record["revoked"], record["revoked_at"] = True, utc_now_iso()
                conn.execute(
                    tokens.update()
                    .where((tokens.c.id == target.id) & (tokens.c.revoked.is_(False)))
                    .values(revoked=True, revoked_at=record["revoked_at"])
                )
        self._forget_cache()  # no cached identity outlives the revocation
        return {"user": user, **record}

    def revoke_token(self, user: str, token_id: int) -> None:
        self.revoke(user, token_id)

    def _forget_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self._generation += 1

    def recent(self, secret: str | None) -> Identity | None:
        """The identity for a token seen in the last few seconds, without touching the database."""
        if not secret:
            return ANONYMOUS
        with self._cache_lock:
            hit = self._cache.get(token_digest(secret))
        return hit[1] if hit is not None and time.monotonic() - hit[0] < _CACHE_SECONDS else None

    def identity_for(self, name: str) -> Identity:
        """The identity of a user as a write token would have it: for work the node does on a user's
        behalf (publishing a job's result into the submitter's namespace)."""
        with self.db.read() as conn:
            row = self._user_row(conn, name)
            if row is None or row.kind != "user":
                raise NotFound(f"user {name!r} does not exist")
            orgs = conn.execute(
                select(users.c.name, memberships.c.role)
                .join(memberships, memberships.c.org_id == users.c.id)
                .where(memberships.c.user_id == row.id)
            ).all()
        return Identity(
            name=row.name,
            user_id=row.id,
            is_admin=bool(row.is_admin),
            scope="write",
            orgs={o.name: o.role for o in orgs},
        )

    def identify(self, secret: str | None) -> Identity:
        """Resolve a bearer token (None = anonymous). A wrong or revoked token is an error, not anonymous."""
        if not secret:
            return ANONYMOUS
        digest = token_digest(secret)
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(digest)
            if hit is not None and now - hit[0] < _CACHE_SECONDS:
                return hit[1]
            generation = self._generation
        with self.db.read() as conn:
            row = conn.execute(
                select(users.c.id, users.c.name, users.c.is_admin, tokens.c.scope, tokens.c.revoked)
                .join(users, users.c.id == tokens.c.user_id)
                .where(tokens.c.digest == digest)
            ).first()
            if row is None or row.revoked:
                raise Unauthorized(
                    "invalid or revoked token: check --token / IOLLM_TOKEN, "
                    "or create one with `iollm token create`"
                )
            orgs = conn.execute(
                select(users.c.name, memberships.c.role)
                .join(memberships, memberships.c.org_id == users.c.id)
                .where(memberships.c.user_id == row.id)
            ).all()
        identity = Identity(
            name=row.name,
            user_id=row.id,
            is_admin=bool(row.is_admin),
            scope=row.scope,
            orgs={o.name: o.role for o in orgs},
        )
        with self._cache_lock:
            if generation == self._generation:  # not if a revocation landed while we read the row
                self._cache[digest] = (now, identity)
        return identity
