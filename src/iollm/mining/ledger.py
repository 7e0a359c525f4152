"""An exact double-entry ledger in integer micro-credits.

Every transfer moves an amount from one account to another, so the sum of all balances is zero at
every instant. Funded accounts never go below zero (only the issuance account, where granted credits
come from, may). A transfer has an id: repeating it with the same content is a no-op, with different
content an error. Each transfer is applied, and appended to the tamper-evident log, in one database
transaction: a process killed mid-transfer leaves nothing half-applied.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, select, text

from ..database import Database, utc_now_iso
from ..money import MAX_MICRO
from ..protocol import Conflict, IollmError, NotFound, ProtocolError
from .tables import accounts, holds, transfers
from .tamperlog import TamperLog

ISSUANCE = "platform:issuance"
FEES = "platform:fees"
REWARDS = "platform:rewards"
ESCROW = "platform:escrow"
ACCOUNT_KINDS = ("user", "designer", "provider", "model", "platform")


class InsufficientFunds(IollmError):
    status = 402
    code = "insufficient_funds"
    type = "billing_error"


@dataclass(frozen=True)
class Transfer:
    id: str
    debit: str
    credit: str
    amount: int
    code: str
    ref_type: str
    ref_id: str
    memo: str = ""

    def content(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.content(), sort_keys=True).encode()).hexdigest()


def check_account(account: str) -> str:
    kind, _, name = account.partition(":")
    if kind not in ACCOUNT_KINDS or not name or len(account) > 200 or any(ord(c) < 32 for c in account):
        raise ProtocolError(f"invalid account {account!r}: use user:NAME, designer:NAME, provider:ID, "
                            "model:NS/NAME or platform:fees|rewards|issuance")
    return kind


def _check(transfer: Transfer) -> None:
    if not isinstance(transfer.amount, int) or isinstance(transfer.amount, bool):
        raise ProtocolError("amounts are integers of micro-credits; no floats")
    if transfer.amount <= 0:
        raise ProtocolError(f"transfer {transfer.id}: amount must be positive, not {transfer.amount}")
    if transfer.amount > MAX_MICRO:
        raise ProtocolError(f"transfer {transfer.id}: amount {transfer.amount} exceeds the maximum {MAX_MICRO}")
    if transfer.debit == transfer.credit:
        raise ProtocolError(f"transfer {transfer.id}: debit and credit are the same account")
    if not transfer.id or len(transfer.id) > 200:
        raise ProtocolError("a transfer needs an id of 1-200 characters")
    check_account(transfer.debit)
    check_account(transfer.credit)


class Ledger:
    def __init__(self, db: Database, log: TamperLog) -> None:
        self.db = db
        self.log = log

    def lock(self, conn: Connection) -> None:
        """Serialise ledger writers (SQLite already does with BEGIN IMMEDIATE)."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(736241)"))

    def _account(self, conn: Connection, account: str) -> Any:
        row = conn.execute(select(accounts).where(accounts.c.id == account)).first()
        if row is None:
            kind = check_account(account)
            conn.execute(accounts.insert().values(
                id=account, kind=kind, balance=0, funded=account != ISSUANCE, created_at=utc_now_iso()
            ))
            row = conn.execute(select(accounts).where(accounts.c.id == account)).first()
        return row

    def apply(self, conn: Connection, transfer: Transfer) -> dict[str, Any] | None:
        """Apply one transfer inside the caller's (locked) write transaction; None if already applied."""
        _check(transfer)
        digest = transfer.digest()
        existing = conn.execute(select(transfers.c.digest).where(transfers.c.id == transfer.id)).first()
        if existing is not None:
            if existing[0] != digest:
                raise Conflict(f"transfer id {transfer.id!r} was already used for a different transfer")
            return None
        debit = self._account(conn, transfer.debit)
        self._account(conn, transfer.credit)
        if debit.funded and debit.balance < transfer.amount:
            raise InsufficientFunds(
                f"{transfer.debit} has {debit.balance} micro-credits, {transfer.amount} are needed; "
                "ask an admin for credits (`iollm credits grant`)"
            )
        conn.execute(accounts.update().where(accounts.c.id == transfer.debit)
                     .values(balance=accounts.c.balance - transfer.amount))
        conn.execute(accounts.update().where(accounts.c.id == transfer.credit)
                     .values(balance=accounts.c.balance + transfer.amount))
        row = {**transfer.content(), "digest": digest, "created_at": utc_now_iso()}
        conn.execute(transfers.insert().values(**row))
        self.log.append(conn, "transfer", transfer.id, {k: row[k] for k in (
            "id", "debit", "credit", "amount", "code", "ref_type", "ref_id", "memo")})
        return row

    def transfer(self, *batch: Transfer, extra=None) -> list[dict[str, Any]]:  # noqa: ANN001
        """Apply transfers atomically: all of them or none. ``extra(conn)`` runs in the same transaction."""
        with self.db.write() as conn:
            self.lock(conn)
            try:
                applied = [row for t in batch if (row := self.apply(conn, t)) is not None]
                if extra is not None:
                    extra(conn)
            finally:
                leaves = self.log.take(conn)
        self.log.committed(leaves)
        return applied

    # -- holds (two-phase: reserve, then post or void) -------------------------------------------

    def hold(self, hold_id: str, account: str, amount: int, ref: str = "") -> None:
        def record(conn: Connection) -> None:
            if conn.execute(select(holds.c.id).where(holds.c.id == hold_id)).first() is None:
                conn.execute(holds.insert().values(id=hold_id, account=account, amount=amount, state="pending",
                                                   created_at=utc_now_iso()))

        self.transfer(Transfer(f"hold:{hold_id}", account, ESCROW, amount, "hold", "hold", hold_id, ref),
                      extra=record)

    def _hold(self, conn: Connection, hold_id: str) -> Any:
        row = conn.execute(select(holds).where(holds.c.id == hold_id)).first()
        if row is None:
            raise NotFound(f"no hold {hold_id}")
        return row

    def post(self, hold_id: str, amount: int, destination: str, code: str = "charge", memo: str = "") -> None:
        """Settle a hold: ``amount`` (at most the reserved amount) goes to ``destination``, the rest back."""
        with self.db.write() as conn:
            self.lock(conn)
            try:
                row = self._hold(conn, hold_id)
                if row.state == "posted":
                    return
                if row.state != "pending":
                    raise Conflict(f"hold {hold_id} is {row.state}")
                if amount > row.amount:
                    raise ProtocolError(f"cannot post {amount} from hold {hold_id} of {row.amount}")
                if amount:
                    self.apply(conn, Transfer(f"post:{hold_id}", ESCROW, destination, amount, code, "hold", hold_id, memo))
                if row.amount - amount:
                    self.apply(conn, Transfer(f"release:{hold_id}", ESCROW, row.account, row.amount - amount,
                                              "release", "hold", hold_id, memo))
                conn.execute(holds.update().where(holds.c.id == hold_id).values(state="posted"))
            finally:
                leaves = self.log.take(conn)
        self.log.committed(leaves)

    def void(self, hold_id: str) -> None:
        with self.db.write() as conn:
            self.lock(conn)
            try:
                row = self._hold(conn, hold_id)
                if row.state == "voided":
                    return
                if row.state != "pending":
                    raise Conflict(f"hold {hold_id} is {row.state}")
                self.apply(conn, Transfer(f"void:{hold_id}", ESCROW, row.account, row.amount, "void", "hold", hold_id))
                conn.execute(holds.update().where(holds.c.id == hold_id).values(state="voided"))
            finally:
                leaves = self.log.take(conn)
        self.log.committed(leaves)

    # -- views -----------------------------------------------------------------------------------

    def balance(self, account: str) -> int:
        with self.db.read() as conn:
            row = conn.execute(select(accounts.c.balance).where(accounts.c.id == account)).first()
        return int(row[0]) if row else 0

    def balances(self) -> dict[str, int]:
        with self.db.read() as conn:
            return {r.id: int(r.balance) for r in conn.execute(select(accounts.c.id, accounts.c.balance))}

    def statement(self, account: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Every line with its counterparty and the record (usage, meter, breakthrough, grant) that caused it."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(transfers).where((transfers.c.debit == account) | (transfers.c.credit == account))
                .order_by(transfers.c.seq).limit(limit)
            ).all()
        out, running = [], 0
        for row in rows:
            delta = row.amount if row.credit == account else -row.amount
            running += delta
            out.append({
                "seq": row.seq, "id": row.id, "at": row.created_at, "amount": delta, "balance": running,
                "counterparty": row.debit if delta > 0 else row.credit, "code": row.code,
                "ref_type": row.ref_type, "ref_id": row.ref_id, "memo": row.memo,
            })
        return out
