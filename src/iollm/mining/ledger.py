"""An exact double-entry ledger in integer micro-credits.

Every transfer moves an amount from one account to another, so the sum of all balances is zero at
every instant. Funded accounts never go below zero (only the issuance account, where granted credits
come from, may). A transfer has an id: repeating it with the same content is a no-op, with different
content an error. Each transfer is applied, and appended to the tamper-evident log, in one database
transaction: a process killed mid-transfer leaves nothing half-applied.

Speed without giving up any of that:

- A batch is checked in Python against the ids and balances it touches, read with one query per few
  hundred of them under the ledger lock, then written with one multi-row statement per table, so a
  10,000-way revenue split costs a handful of statements instead of tens of thousands.
- Group commit: callers in other threads that arrive while a transaction is committing are queued and
  committed together in the next one (one fsync for all, like PostgreSQL's ``commit_delay``). Each
  caller still gets its result only after that commit is durable, and a caller whose batch fails
  (insufficient funds, a conflicting id, its ``extra`` raising) is undone alone: the others commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, text

from ..database import Database, utc_now_iso
from ..errors import Conflict, IollmError, NotFound, ProtocolError
from ..money import MAX_MICRO
from .tables import accounts, holds, insert_many, select_in, transfers
from .tamperlog import TamperLog, entry_bytes

logger = logging.getLogger(__name__)

ISSUANCE = "platform:issuance"
FEES = "platform:fees"
REWARDS = "platform:rewards"
ESCROW = "platform:escrow"
ACCOUNT_KINDS = ("user", "designer", "provider", "model", "platform")
FIELDS = ("id", "debit", "credit", "amount", "code", "ref_type", "ref_id", "memo")

Extra = Callable[[Connection], object]

_CONTROL = re.compile(r"[\x00-\x1f]")
_DIGEST_JSON = json.JSONEncoder(sort_keys=True)  # made once: json.dumps(sort_keys=...) makes one per call
_quote = json.encoder.encode_basestring_ascii  # how those encoders write a string (ensure_ascii)


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
        """The fields as a plain dict (``asdict`` deep-copies: too slow for 10,000-way splits)."""
        return {
            "id": self.id,
            "debit": self.debit,
            "credit": self.credit,
            "amount": self.amount,
            "code": self.code,
            "ref_type": self.ref_type,
            "ref_id": self.ref_id,
            "memo": self.memo,
        }

    def digest(self) -> str:
        """The idempotency check: sha256 of the canonical JSON of the content."""
        return hashlib.sha256(_DIGEST_JSON.encode(self.content()).encode()).hexdigest()

    def canonical(self) -> tuple[str, str]:
        """``digest()`` and the log entry text, byte for byte what the JSON encoders give, but by
        formatting: encoding JSON is most of a 10,000-way split's Python time. Other types than
        ``int`` and ``str`` (which callers should not pass) take the generic encoders."""
        texts = (self.code, self.credit, self.debit, self.id, self.memo, self.ref_id, self.ref_type)
        if type(self.amount) is not int or not all(type(value) is str for value in texts):
            return self.digest(), entry_bytes("transfer", self.id, self.content()).decode()
        amount = int.__repr__(self.amount)
        code, credit, debit, ident, memo, ref_id, ref_type = map(_quote, texts)
        for_digest = (
            f'{{"amount": {amount}, "code": {code}, "credit": {credit}, "debit": {debit}, "id": {ident}, '
            f'"memo": {memo}, "ref_id": {ref_id}, "ref_type": {ref_type}}}'
        )
        entry = (
            f'{{"body":{{"amount":{amount},"code":{code},"credit":{credit},"debit":{debit},"id":{ident},'
            f'"memo":{memo},"ref_id":{ref_id},"ref_type":{ref_type}}},"kind":"transfer","ref":{ident}}}'
        )
        return hashlib.sha256(for_digest.encode()).hexdigest(), entry


def check_account(account: str) -> str:
    kind, _, name = account.partition(":") if isinstance(account, str) else ("", "", "")
    if kind not in ACCOUNT_KINDS or not name or len(account) > 200 or _CONTROL.search(account):
        raise ProtocolError(
            f"invalid account {account!r}: use user:NAME, designer:NAME, provider:ID, "
            "model:NS/NAME or platform:fees|rewards|issuance"
        )
    return kind


def _check(transfer: Transfer) -> None:
    if not isinstance(transfer.amount, int) or isinstance(transfer.amount, bool):
        raise ProtocolError("amounts are integers of micro-credits; no floats")
    if transfer.amount <= 0:
        raise ProtocolError(f"transfer {transfer.id}: amount must be positive, not {transfer.amount}")
    if transfer.amount > MAX_MICRO:
        raise ProtocolError(
            f"transfer {transfer.id}: amount {transfer.amount} exceeds the maximum {MAX_MICRO}"
        )
    if transfer.debit == transfer.credit:
        raise ProtocolError(f"transfer {transfer.id}: debit and credit are the same account")
    if not isinstance(transfer.id, str) or not transfer.id or len(transfer.id) > 200:
        raise ProtocolError("a transfer needs an id of 1-200 characters")
    check_account(transfer.debit)
    check_account(transfer.credit)


def _add_to_balances(conn: Connection, changes: list[tuple[int, str]]) -> None:
    """``balance += delta`` for each ``(delta, account)`` in one round trip (relative, so it stays
    right even if some other writer slipped past the lock)."""
    if not changes:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "UPDATE ledger_accounts AS a SET balance = a.balance + d.delta"
            " FROM unnest(%s::bigint[], %s::text[]) AS d(delta, id) WHERE a.id = d.id",
            ([delta for delta, _ in changes], [name for _, name in changes]),
        )
    else:
        conn.exec_driver_sql("UPDATE ledger_accounts SET balance = balance + ? WHERE id = ?", changes)


@dataclass
class _Account:
    balance: int
    funded: bool
    stored: bool  # a row exists already (else it is inserted when the plan is written)


class _Plan:
    """Checked transfers not yet written, against ids and balances read once under the ledger lock.

    ``add`` works on this in-memory picture only, and keeps nothing of a batch that fails, so several
    callers' batches can share one plan (and one transaction) without savepoints; ``flush`` writes
    everything added with one statement per table.
    """

    def __init__(self, conn: Connection, log: TamperLog) -> None:
        self.conn = conn
        self.log = log
        self.accounts: dict[str, _Account] = {}
        self.digests: dict[str, str | None] = {}  # transfer id -> digest, None when unused
        self.deltas: dict[str, int] = {}  # account -> change since the last flush
        self.rows: list[dict[str, Any]] = []
        self.entries: list[tuple[str, str, str]] = []  # log entries of ``rows``

    def load(self, batch: Sequence[Transfer]) -> None:
        """Read the transfer ids and accounts of ``batch`` not known yet."""
        ids = {t.id for t in batch} - self.digests.keys()
        found = dict(select_in(self.conn, transfers, ("id", "digest"), "id", ids))
        self.digests.update({ident: found.get(ident) for ident in ids})
        names = {name for t in batch for name in (t.debit, t.credit)} - self.accounts.keys()
        rows = select_in(self.conn, accounts, ("id", "balance", "funded"), "id", names)
        stored = {name: _Account(int(balance), bool(funded), True) for name, balance, funded in rows}
        for name in names:
            self.accounts[name] = stored.get(name) or _Account(0, name != ISSUANCE, False)

    def add(self, batch: Sequence[Transfer]) -> list[dict[str, Any]]:
        """Plan a checked batch in order, all or nothing; returns the rows of the new transfers."""
        self.load(batch)
        balances: dict[str, int] = {}
        digests: dict[str, str] = {}
        rows: list[dict[str, Any]] = []
        entries: list[tuple[str, str, str]] = []
        now = utc_now_iso()
        for transfer in batch:
            digest, entry = transfer.canonical()
            known = digests.get(transfer.id) or self.digests.get(transfer.id)
            if known is not None:
                if known != digest:
                    raise Conflict(f"transfer id {transfer.id!r} was already used for a different transfer")
                continue
            digests[transfer.id] = digest
            self._move(balances, transfer)
            rows.append({**transfer.content(), "digest": digest, "created_at": now})
            entries.append(("transfer", transfer.id, entry))
        self._keep(balances, digests, rows, entries)
        return rows

    def _move(self, balances: dict[str, int], transfer: Transfer) -> None:
        debit = self.accounts[transfer.debit]
        have = balances.get(transfer.debit, debit.balance)
        if debit.funded and have < transfer.amount:
            raise InsufficientFunds(
                f"{transfer.debit} has {have} micro-credits, {transfer.amount} are needed; "
                "ask an admin for credits (`iollm credits grant`)"
            )
        credit = balances.get(transfer.credit, self.accounts[transfer.credit].balance) + transfer.amount
        if credit > MAX_MICRO or have - transfer.amount < -MAX_MICRO:  # the database holds 64-bit integers
            raise ProtocolError(f"transfer {transfer.id}: a balance would exceed {MAX_MICRO} micro-credits")
        balances[transfer.debit] = have - transfer.amount
        balances[transfer.credit] = credit

    def _keep(
        self,
        balances: dict[str, int],
        digests: dict[str, str],
        rows: list[dict[str, Any]],
        entries: list[tuple[str, str, str]],
    ) -> None:
        self.digests.update(digests)
        for name, value in balances.items():
            account = self.accounts[name]
            self.deltas[name] = self.deltas.get(name, 0) + value - account.balance
            account.balance = value
        self.rows.extend(rows)
        self.entries.extend(entries)

    def flush(self) -> None:
        """Write what was added: new accounts, balance changes, transfers and their log entries."""
        if not self.rows:
            return
        now = utc_now_iso()
        new = [name for name in self.deltas if not self.accounts[name].stored]
        if new:
            insert_many(self.conn, accounts, [self._account_row(name, now) for name in new])
        _add_to_balances(
            self.conn,
            [(delta, name) for name, delta in self.deltas.items() if delta and self.accounts[name].stored],
        )
        insert_many(self.conn, transfers, self.rows)
        self.log.append_encoded(self.conn, self.entries)
        for name in new:
            self.accounts[name].stored = True
        self.deltas.clear()
        self.rows, self.entries = [], []

    def _account_row(self, name: str, now: str) -> dict[str, Any]:
        account = self.accounts[name]
        return {
            "id": name,
            "kind": name.partition(":")[0],
            "balance": account.balance,
            "funded": account.funded,
            "created_at": now,
        }

    def forget(self) -> None:
        """Drop what was read (after other code wrote to the ledger in this transaction)."""
        self.flush()
        self.accounts.clear()
        self.digests.clear()


@dataclass(eq=False)
class _Job:
    """One caller's request, waiting to be committed with others."""

    batch: tuple[Transfer, ...]
    extra: Extra | None
    wake: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    result: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None


class Ledger:
    def __init__(self, db: Database, log: TamperLog) -> None:
        self.db = db
        self.log = log
        self._mutex = threading.Lock()
        self._queue: list[_Job] = []
        self._leading = False  # a caller is committing a group; new ones queue for the next
        self._inside = threading.local()
        self.commits = 0  # transactions made by transfer/hold/post/void (each may carry many jobs)
        self.jobs = 0

    def lock(self, conn: Connection) -> None:
        """Serialise ledger writers (SQLite already does with BEGIN IMMEDIATE)."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(736241)"))

    def apply(self, conn: Connection, transfer: Transfer) -> dict[str, Any] | None:
        """Apply one transfer inside the caller's (locked) write transaction; None if already applied."""
        rows = self.apply_batch(conn, [transfer])
        return rows[0] if rows else None

    def apply_batch(self, conn: Connection, batch: Sequence[Transfer]) -> list[dict[str, Any]]:
        """Apply transfers in order inside the caller's (locked) write transaction: checked in Python,
        written in one pass. Returns the rows of those not applied before; raises, writing nothing,
        if any one is invalid, conflicts or would overdraw."""
        for transfer in batch:
            _check(transfer)
        plan = _Plan(conn, self.log)
        rows = plan.add(batch)
        plan.flush()
        return rows

    def transfer(self, *batch: Transfer, extra: Extra | None = None) -> list[dict[str, Any]]:
        """Apply transfers atomically: all of them or none. ``extra(conn)`` runs in the same transaction.

        Returns once the transaction is durable; it may carry other threads' transfers too."""
        return self._submit(_Job(tuple(batch), extra))

    # -- group commit ------------------------------------------------------------------------------

    def _submit(self, job: _Job) -> list[dict[str, Any]]:
        """Queue ``job``; the first caller with no commit in progress leads, the others wait."""
        if getattr(self._inside, "active", False):
            raise RuntimeError("the ledger cannot be written from inside its own transaction (use conn)")
        with self._mutex:
            self._queue.append(job)
            lead = not self._leading
            self._leading = True
        if not lead:
            try:
                job.wake.wait()
            except BaseException:  # e.g. KeyboardInterrupt: do not leave the others waiting on us
                self._abandon(job)
                raise
        if not job.done:  # woken to lead the next group
            self._lead()
        if job.error is not None:
            raise job.error
        return job.result

    def _lead(self) -> None:
        """Commit every queued job in one transaction, then hand the lead to the next caller."""
        with self._mutex:
            group, self._queue = self._queue, []
        self._inside.active = True
        try:
            leaves = self._commit(group)
        except BaseException as exc:  # the commit failed: nothing of the group is durable
            for job in group:
                job.result = []
                job.error = job.error or exc
        else:
            self._extend_tree(leaves)
        finally:
            self._inside.active = False
            self._hand_over(group)

    def _extend_tree(self, leaves: list[tuple[int, bytes]]) -> None:
        """After the commit the transfers are durable, whatever happens here; a tree left behind
        catches up from the stored leaves on the next commit, and a missed checkpoint is made later."""
        try:
            self.log.committed(leaves)
        except Exception:
            logger.exception("could not extend the in-memory log tree (it will catch up)")

    def _abandon(self, job: _Job) -> None:
        """Take a caller that stopped waiting out of the queue, passing on the lead if it had it."""
        with self._mutex:
            if job not in self._queue:
                return  # already in a group being committed: it completes without its caller
            self._queue.remove(job)
            if job.wake.is_set():
                if self._queue:
                    self._queue[0].wake.set()
                else:
                    self._leading = False

    def _hand_over(self, group: list[_Job]) -> None:
        with self._mutex:
            if self._queue:
                self._queue[0].wake.set()
            else:
                self._leading = False
        for job in group:
            job.done = True
            job.wake.set()

    def _commit(self, group: list[_Job]) -> list[tuple[int, bytes]]:
        """One durable transaction for the whole group; returns the log leaves it appended."""
        with self.db.write() as conn:
            self.lock(conn)
            try:
                plan = _Plan(conn, self.log)
                plan.load([t for job in group if job.extra is None for t in self._checked(job)])
                for job in group:
                    self._run(conn, plan, job)
                plan.flush()
            finally:
                leaves = self.log.take(conn)
        self.commits += 1
        self.jobs += len(group)
        return leaves

    @staticmethod
    def _checked(job: _Job) -> tuple[Transfer, ...]:
        """The job's transfers if they are well formed; else its error is set and nothing is read."""
        try:
            for transfer in job.batch:
                _check(transfer)
        except Exception as exc:
            job.error = exc
            return ()
        return job.batch

    def _run(self, conn: Connection, plan: _Plan, job: _Job) -> None:
        """Plain batches join the shared plan; one with ``extra`` runs alone in a savepoint."""
        if job.error is not None:
            return
        if job.extra is None:
            try:
                job.result = plan.add(job.batch)
            except Exception as exc:
                job.error = exc
            return
        plan.forget()
        mark = self.log.mark(conn)
        try:
            with conn.begin_nested():
                job.result = self.apply_batch(conn, job.batch)
                job.extra(conn)
        except Exception as exc:
            self.log.rewind(conn, mark)
            job.result, job.error = [], exc

    # -- holds (two-phase: reserve, then post or void) -------------------------------------------

    def hold(self, hold_id: str, account: str, amount: int, ref: str = "") -> None:
        def record(conn: Connection) -> None:
            if conn.execute(select(holds.c.id).where(holds.c.id == hold_id)).first() is None:
                conn.execute(
                    holds.insert().values(
                        id=hold_id, account=account, amount=amount, state="pending", created_at=utc_now_iso()
                    )
                )

        self.transfer(
            Transfer(f"hold:{hold_id}", account, ESCROW, amount, "hold", "hold", hold_id, ref), extra=record
        )

    def _hold(self, conn: Connection, hold_id: str) -> Any:
        row = conn.execute(select(holds).where(holds.c.id == hold_id)).first()
        if row is None:
            raise NotFound(f"no hold {hold_id}")
        return row

    def post(self, hold_id: str, amount: int, destination: str, code: str = "charge", memo: str = "") -> None:
        """Settle a hold: ``amount`` (at most the reserved amount) goes to ``destination``, the rest back."""

        def settle(conn: Connection) -> None:
            row = self._hold(conn, hold_id)
            if row.state == "posted":
                return
            if row.state != "pending":
                raise Conflict(f"hold {hold_id} is {row.state}")
            if amount > row.amount:
                raise ProtocolError(f"cannot post {amount} from hold {hold_id} of {row.amount}")
            batch = []
            if amount:
                batch.append(
                    Transfer(f"post:{hold_id}", ESCROW, destination, amount, code, "hold", hold_id, memo)
                )
            if row.amount - amount:
                rest = row.amount - amount
                batch.append(
                    Transfer(
                        f"release:{hold_id}", ESCROW, row.account, rest, "release", "hold", hold_id, memo
                    )
                )
            self.apply_batch(conn, batch)
            conn.execute(holds.update().where(holds.c.id == hold_id).values(state="posted"))

        self.transfer(extra=settle)

    def void(self, hold_id: str) -> None:
        def cancel(conn: Connection) -> None:
            row = self._hold(conn, hold_id)
            if row.state == "voided":
                return
            if row.state != "pending":
                raise Conflict(f"hold {hold_id} is {row.state}")
            self.apply(
                conn, Transfer(f"void:{hold_id}", ESCROW, row.account, row.amount, "void", "hold", hold_id)
            )
            conn.execute(holds.update().where(holds.c.id == hold_id).values(state="voided"))

        self.transfer(extra=cancel)

    def release_in(self, conn: Connection, hold_id: str, memo: str = "") -> int:
        """Inside the caller's ledger transaction (an ``extra``): give a pending hold back to its account
        in full, so that a charge made next in the same transaction is checked against the real balance.
        Returns the amount released: 0 when there is no such hold or it was settled already."""
        row = conn.execute(select(holds).where(holds.c.id == hold_id)).first()
        if row is None or row.state != "pending":
            return 0
        self.apply(
            conn,
            Transfer(f"release:{hold_id}", ESCROW, row.account, row.amount, "release", "hold", hold_id, memo),
        )
        conn.execute(holds.update().where(holds.c.id == hold_id).values(state="released"))
        return int(row.amount)

    def pending_holds(self, prefix: str = "") -> list[dict[str, Any]]:
        """Holds not settled yet (whose ids start with ``prefix``), oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(holds)
                .where((holds.c.state == "pending") & holds.c.id.startswith(prefix, autoescape=True))
                .order_by(holds.c.created_at)
            ).all()
        return [dict(row._mapping) for row in rows]

    # -- views -----------------------------------------------------------------------------------

    def balance(self, account: str) -> int:
        """What the account can spend: holds in progress are not part of it."""
        with self.db.read() as conn:
            return self.balance_in(conn, account)

    @staticmethod
    def balance_in(conn: Connection, account: str) -> int:
        """The balance as the caller's transaction sees it (inside an ``extra``: exact, under the lock)."""
        row = conn.execute(select(accounts.c.balance).where(accounts.c.id == account)).first()
        return int(row[0]) if row else 0

    def balances(self) -> dict[str, int]:
        with self.db.read() as conn:
            return {r.id: int(r.balance) for r in conn.execute(select(accounts.c.id, accounts.c.balance))}

    def statement(self, account: str, limit: int = 1000) -> list[dict[str, Any]]:
        """Every line with its counterparty and the record (usage, meter, breakthrough, grant) that caused it."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(transfers)
                .where((transfers.c.debit == account) | (transfers.c.credit == account))
                .order_by(transfers.c.seq)
                .limit(limit)
            ).all()
        out, running = [], 0
        for row in rows:
            delta = row.amount if row.credit == account else -row.amount
            running += delta
            out.append(
                {
                    "seq": row.seq,
                    "id": row.id,
                    "at": row.created_at,
                    "amount": delta,
                    "balance": running,
                    "counterparty": row.debit if delta > 0 else row.credit,
                    "code": row.code,
                    "ref_type": row.ref_type,
                    "ref_id": row.ref_id,
                    "memo": row.memo,
                }
            )
        return out
