"""Revenue-share agreements between a model's designer and compute providers.

Terms are canonical JSON signed with Ed25519 by the designer and by every provider. An agreement is in
force only once every party has signed; changing the terms makes a new version that again needs every
signature (and retires the old version only when the new one is in force). Each version and each
signature is appended to the tamper-evident log.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from .. import signing
from ..database import Database, utc_now_iso
from ..errors import Conflict, Forbidden, NotFound, ProtocolError
from ..hub import Hub, Identity
from ..money import BPS_SCALE, credits_from_json, parse_credits
from .tables import agreements, keys
from .tamperlog import TamperLog


def agreement_cap(terms: dict[str, Any]) -> int | None:
    """The cap of signed terms in micro-credits: a decimal string of credits (an integer of
    micro-credits in terms signed before amounts became strings)."""
    cap = terms.get("cap")
    if cap is None or cap == "":
        return None
    if isinstance(cap, int) and not isinstance(cap, bool):
        return cap
    return parse_credits(str(cap))


def new_agreement_id() -> str:
    return f"ag-{int(time.time()):x}{os.urandom(4).hex()}"


class Agreements:
    def __init__(
        self, db: Database, hub: Hub, log: TamperLog, fee_bps: int, provider_exists=lambda provider_id: True
    ) -> None:
        self.db = db
        self.hub = hub
        self.log = log
        self.fee_bps = fee_bps
        self.provider_exists = provider_exists

    # -- designer keys ---------------------------------------------------------------------------

    def register_key(self, caller: Identity, key_id: str, proof: str) -> dict[str, str]:
        """Bind a designer's public key to their hub account (they sign {"user", "key"} with it)."""
        user = caller.require_user()
        if not signing.verify_json(key_id, {"user": user, "key": key_id}, proof):
            raise ProtocolError("the key proof does not verify: sign {user, key} with the key you register")
        with self.db.write() as conn:
            row = conn.execute(select(keys.c.user).where(keys.c.key_id == key_id)).first()
            if row is not None and row[0] != user:
                raise Conflict("this key belongs to another user")
            if row is None:
                conn.execute(keys.insert().values(key_id=key_id, user=user, created_at=utc_now_iso()))
        return {"user": user, "key": key_id}

    def _key_owner(self, conn: Connection, key_id: str) -> str | None:
        row = conn.execute(select(keys.c.user).where(keys.c.key_id == key_id)).first()
        return row[0] if row else None

    # -- proposing and signing -------------------------------------------------------------------

    def _versions(self, conn: Connection, agreement_id: str) -> list[Any]:
        return conn.execute(
            select(agreements).where(agreements.c.id == agreement_id).order_by(agreements.c.version)
        ).all()

    def _check_terms(self, conn: Connection, caller: Identity, terms: dict[str, Any]) -> None:
        until, cap = terms.get("until"), terms.get("cap")
        if cap is not None:
            credits_from_json(cap, "cap")  # credits as a decimal string, kept as signed
        if until is not None:
            try:
                datetime.fromisoformat(str(until).replace("Z", "+00:00"))
            except ValueError as exc:
                raise ProtocolError("until must be an ISO date, e.g. 2027-12-31") from exc
        model = str(terms.get("model", ""))
        repo = self.hub.get_repo(caller, "model", model)
        caller.require_write(repo.namespace)  # only the model's designer proposes
        providers = terms.get("providers")
        if not isinstance(providers, list) or not providers:
            raise ProtocolError("an agreement needs providers: [{id, share_bps}]")
        total = 0
        for party in providers:
            share = party.get("share_bps")
            if not isinstance(share, int) or isinstance(share, bool) or not 0 < share <= BPS_SCALE:
                raise ProtocolError("share_bps must be an integer between 1 and 10000 (basis points)")
            if not self.provider_exists(str(party.get("id", ""))):
                raise NotFound(f"provider {party.get('id')} is not registered on this node")
            pledge = party.get("compute_pledge_seconds")
            if pledge is not None and (not isinstance(pledge, int) or pledge < 0):
                raise ProtocolError("compute_pledge_seconds must be a non-negative integer")
            total += share
        others = sum(
            p["share_bps"]
            for row in self.in_force(model, conn=conn)
            if row["id"] != terms.get("agreement")
            for p in row["terms"]["providers"]
        )
        if total + others + self.fee_bps > BPS_SCALE:
            raise ProtocolError(
                f"shares exceed 100%: these {total} bps plus {others} bps already promised plus the "
                f"platform fee of {self.fee_bps} bps is more than 10000"
            )

    def propose(self, caller: Identity, terms: dict[str, Any], signature: str) -> dict[str, Any]:
        """The designer proposes terms (a new agreement, or a new version of one), signed by their key."""
        user = caller.require_user()
        with self.db.write() as conn:
            try:
                designer_key = str(terms.get("designer", {}).get("key", ""))
                if (
                    self._key_owner(conn, designer_key) != user
                    or terms.get("designer", {}).get("user") != user
                ):
                    raise Forbidden(
                        "the designer key in the terms is not yours: register it first "
                        "(`iollm agreement propose` does this for you)"
                    )
                agreement_id = str(terms.get("agreement") or "")
                if not agreement_id.startswith("ag-") or len(agreement_id) > 40:
                    raise ProtocolError("terms need an agreement id like 'ag-…' (new, or the one to change)")
                versions = self._versions(conn, agreement_id)
                if versions and json.loads(versions[-1].terms)["designer"]["user"] != user:
                    raise Forbidden("only the agreement's designer may change its terms")
                expected_version = versions[-1].version + 1 if versions else 1
                if terms.get("version") != expected_version:
                    raise ProtocolError(f"terms of {agreement_id} must carry version {expected_version}")
                self._check_terms(conn, caller, terms)
                if not signing.verify_json(designer_key, terms, signature):
                    raise ProtocolError("the designer's signature does not match the terms")
                body = signing.canonical_json(terms).decode()
                conn.execute(
                    agreements.insert().values(
                        id=agreement_id,
                        version=expected_version,
                        model=terms["model"],
                        terms=body,
                        signatures=json.dumps({designer_key: signature}),
                        state="proposed",
                        created_at=utc_now_iso(),
                    )
                )
                self.log.append(
                    conn,
                    "agreement",
                    f"{agreement_id}/v{expected_version}/proposed",
                    {"terms": terms, "signatures": {designer_key: signature}},
                )
            finally:
                leaves = self.log.take(conn)
        self.log.committed(leaves)
        return self.get(agreement_id, expected_version)

    def sign(self, agreement_id: str, version: int | None, party: str, signature: str) -> dict[str, Any]:
        """A provider signs; when every party has signed, this version is in force."""
        with self.db.write() as conn:
            try:
                versions = self._versions(conn, agreement_id)
                if not versions:
                    raise NotFound(f"no agreement {agreement_id}")
                row = (
                    versions[-1]
                    if version is None
                    else next((v for v in versions if v.version == version), None)
                )
                if row is None:
                    raise NotFound(f"agreement {agreement_id} has no version {version}")
                if row.state != "proposed":
                    raise Conflict(f"agreement {agreement_id} v{row.version} is {row.state}; nothing to sign")
                terms = json.loads(row.terms)
                parties = {p["id"] for p in terms["providers"]}
                if party not in parties:
                    raise Forbidden(f"{party} is not a party to agreement {agreement_id}")
                if not signing.verify_json(party, terms, signature):
                    raise ProtocolError("the signature does not match the terms and this provider's key")
                signatures = json.loads(row.signatures)
                signatures[party] = signature
                complete = parties <= set(signatures)
                values: dict[str, Any] = {"signatures": json.dumps(signatures)}
                if complete:
                    values["state"] = "in_force"
                    conn.execute(
                        agreements.update()
                        .where((agreements.c.id == agreement_id) & (agreements.c.state == "in_force"))
                        .values(state="superseded")
                    )
                conn.execute(
                    agreements.update()
                    .where((agreements.c.id == agreement_id) & (agreements.c.version == row.version))
                    .values(**values)
                )
                self.log.append(
                    conn,
                    "agreement",
                    f"{agreement_id}/v{row.version}/signed/{party}",
                    {"party": party, "signature": signature, "in_force": complete},
                )
            finally:
                leaves = self.log.take(conn)
        self.log.committed(leaves)
        return self.get(agreement_id, row.version)

    # -- views -----------------------------------------------------------------------------------

    def _view(self, row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            "version": row.version,
            "model": row.model,
            "state": row.state,
            "terms": json.loads(row.terms),
            "signatures": json.loads(row.signatures),
            "created_at": row.created_at,
        }

    def get(self, agreement_id: str, version: int | None = None) -> dict[str, Any]:
        with self.db.read() as conn:
            versions = self._versions(conn, agreement_id)
        row = (
            versions[-1]
            if version is None and versions
            else next((v for v in versions if v.version == version), None)
        )
        if row is None:
            raise NotFound(f"no agreement {agreement_id}")
        return self._view(row)

    def list(self, model: str | None = None, party: str | None = None) -> list[dict[str, Any]]:
        query = select(agreements).order_by(agreements.c.created_at)
        if model:
            query = query.where(agreements.c.model == model)
        with self.db.read() as conn:
            rows = [self._view(r) for r in conn.execute(query)]
        if party:
            rows = [
                r
                for r in rows
                if party in {p["id"] for p in r["terms"]["providers"]}
                or r["terms"]["designer"]["user"] == party
            ]
        return rows

    def in_force(
        self, model: str, at: str | None = None, conn: Connection | None = None
    ) -> list[dict[str, Any]]:
        """Versions in force for ``model`` (and not expired at ``at``)."""
        query = select(agreements).where((agreements.c.model == model) & (agreements.c.state == "in_force"))
        if conn is None:
            with self.db.read() as own:
                rows = [self._view(r) for r in own.execute(query)]
        else:
            rows = [self._view(r) for r in conn.execute(query)]
        now = at or datetime.now(UTC).isoformat()
        return [
            r
            for r in rows
            if not r["terms"].get("until") or str(r["terms"]["until"]) >= now[: len(str(r["terms"]["until"]))]
        ]
