"""Joint mining as the node runs it: credits, balances and statements, prices, agreements, usage
billing, breakthrough rewards, and the tamper-evident log that records all of it (meter records too)."""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from ..database import Database
from ..errors import Forbidden, NotFound, ProtocolError
from ..hub import Hub, Identity
from ..hub.tables import users as hub_users
from ..money import MICRO, credits_from_json
from ..protocol import check_name, split_repo_id
from ..runtime import UsageLog
from .agreements import Agreements
from .billing import Billing, Fees
from .ledger import ESCROW, FEES, ISSUANCE, REWARDS, Ledger, Transfer, check_account
from .rewards import Rewards
from .tables import log_entries, metadata, transfers
from .tamperlog import TamperLog
from .verify import verify_ledger

log = logging.getLogger("iollm.mining")
PLATFORM_ACCOUNTS = tuple(a.removeprefix("platform:") for a in (ISSUANCE, FEES, REWARDS, ESCROW))
_PROVIDER_ID = re.compile(r"[A-Za-z0-9]{1,16}:[A-Za-z0-9_-]{1,120}", re.ASCII)


@dataclass
class MiningConfig:
    fee_bps: int = 1000
    reward_bps: int = 5000
    reward_amount: int = 100 * MICRO  # paid per breakthrough (at most what the pool holds)
    reward_provider_bps: int = 5000  # providers' part of a reward when they computed the evaluation
    challenge_seconds: float = 86400.0
    loop_seconds: float = 0.5

    @classmethod
    def from_env(cls) -> MiningConfig:
        config = cls()
        if os.environ.get("IOLLM_CHALLENGE_SECONDS"):
            config.challenge_seconds = float(os.environ["IOLLM_CHALLENGE_SECONDS"])
        if os.environ.get("IOLLM_FEE_BPS"):
            config.fee_bps = int(os.environ["IOLLM_FEE_BPS"])
        return config


class Mining:
    def __init__(
        self,
        db: Database,
        hub: Hub,
        usage: UsageLog,
        key: Ed25519PrivateKey,
        config: MiningConfig,
        compute: Any = None,
        breakthroughs: Any = None,
    ) -> None:
        db.create(metadata)
        self.db = db
        self.config = config
        self.log = TamperLog(db, key)
        self.ledger = Ledger(db, self.log)
        self.compute = compute  # the compute layer's parts (providers, meters), when the node runs them
        provider_exists = (lambda p: compute.providers.get(p) is not None) if compute else (lambda p: True)
        self.agreements = Agreements(db, hub, self.log, config.fee_bps, provider_exists)
        from ..compute import compute_by_provider

        self.billing = Billing(
            db,
            hub,
            self.ledger,
            self.agreements,
            usage,
            Fees(config.fee_bps, config.reward_bps),
            compute_for_model=lambda model: compute_by_provider(db, model=model),
        )
        events, submission = breakthroughs or ((lambda: []), (lambda _id: None))
        self.rewards = Rewards(
            db,
            self.ledger,
            events,
            submission,
            lambda jobs, designer: compute_by_provider(db, job_ids=list(jobs), submitter=designer),
            config.reward_amount,
            config.reward_provider_bps,
            config.challenge_seconds,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._meter_cursor = ""
        self._lock = threading.Lock()

    # -- credits and accounts --------------------------------------------------------------------

    def grant(
        self, caller: Identity, user: object, amount: object, transfer_id: object = None
    ) -> dict[str, Any]:
        """Credits from issuance to an existing user's wallet; ``amount`` is a decimal string of credits."""
        caller.require_admin()
        micro = credits_from_json(amount, "amount")
        if not isinstance(user, str):
            raise ProtocolError('user must be the name of a user, e.g. "alice"', param="user")
        self.require_user(check_name(user, "user name"))
        if transfer_id is not None and (not isinstance(transfer_id, str) or not 0 < len(transfer_id) <= 200):
            raise ProtocolError("id must be a string of 1-200 characters", param="id")
        ident = transfer_id or f"grant:{user}:{os.urandom(8).hex()}"
        self.ledger.transfer(
            Transfer(
                ident, ISSUANCE, f"user:{user}", micro, "grant", "grant", ident, f"granted by {caller.name}"
            )
        )
        return {
            "transfer": ident,
            "account": f"user:{user}",
            "amount": micro,
            "balance": self.ledger.balance(f"user:{user}"),
        }

    def require_user(self, name: str) -> None:
        """Wallets and earnings belong to users of this hub: anyone else is a 404 that names them."""
        with self.db.read() as conn:
            row = conn.execute(select(hub_users.c.kind).where(hub_users.c.name == name)).first()
        if row is None:
            raise NotFound(f"user {name!r} does not exist; create it with `iollm user create {name}`")
        if row.kind != "user":
            raise NotFound(f"{name!r} is an organisation: credits belong to users")

    @staticmethod
    def check_account(account: object) -> tuple[str, str]:
        """An account named in a request, well formed (a 400 otherwise): (kind, name)."""
        kind = check_account(account)  # type: ignore[arg-type]
        name = str(account).split(":", 1)[1]
        if kind in ("user", "designer"):
            check_name(name, f"{kind} name")
        elif kind == "model":
            split_repo_id(name)
        elif kind == "provider":
            if not _PROVIDER_ID.fullmatch(name):
                raise ProtocolError(f"invalid provider id {name!r}: expected ed25519:<base64url key>")
        elif name not in PLATFORM_ACCOUNTS:
            raise ProtocolError(
                f"invalid account {account!r}: the platform's are {', '.join(PLATFORM_ACCOUNTS)}"
            )
        return kind, name

    def can_see(self, caller: Identity, account: str) -> None:
        """Well formed (400), the caller's to read (403), and a wallet or earnings of a user that exists
        (404; told only to an admin, so nobody else can probe for users)."""
        kind, name = self.check_account(account)
        if not caller.is_admin:
            self._may_read(caller, kind, name, account)
        if kind in ("user", "designer"):
            self.require_user(name)

    def _may_read(self, caller: Identity, kind: str, name: str, account: str) -> None:
        user = caller.require_user()
        if kind in ("user", "designer") and name == user:
            return
        if kind == "provider" and self.compute is not None:
            provider = self.compute.providers.get(name)
            if provider and provider.get("owner") == user:
                return
        if kind == "model" and name.split("/")[0] in (user, *caller.orgs):
            return
        raise Forbidden(f"{user} may not read {account}")

    def balance(self, caller: Identity, account: str | None) -> dict[str, Any]:
        account = account or f"user:{caller.require_user()}"
        self.can_see(caller, account)
        return {"account": account, "balance": self.ledger.balance(account)}

    def statement(self, caller: Identity, account: str) -> dict[str, Any]:
        self.can_see(caller, account)
        lines = self.ledger.statement(account)
        return {"account": account, "balance": self.ledger.balance(account), "lines": lines}

    # -- the log ---------------------------------------------------------------------------------

    def sync_log(self) -> int:
        """Append meter records (from the compute layer) and breakthroughs to the log, each once."""
        added = 0
        with self._lock:
            if self.compute is not None:
                for meter in self.compute.meters.list(since=self._meter_cursor or None):
                    added += self._append_once(
                        "meter",
                        meter["id"],
                        {
                            "payload": meter["payload"],
                            "provider_signature": meter["provider_signature"],
                            "node_signature": meter["node_signature"],
                            "disputed": bool(meter["disputed"]),
                        },
                    )
                    self._meter_cursor = max(self._meter_cursor, meter["created_at"])
            for event in self.rewards.breakthroughs():
                added += self._append_once(
                    "breakthrough",
                    str(event["id"]),
                    {
                        k: event[k]
                        for k in ("suite", "graph_hash", "designer", "improvement", "created_at")
                        if k in event
                    },
                )
        return added

    def _append_once(self, kind: str, ref: str, body: dict[str, Any]) -> int:
        with self.db.read() as conn:
            if (
                conn.execute(
                    select(log_entries.c.seq).where((log_entries.c.kind == kind) & (log_entries.c.ref == ref))
                ).first()
                is not None
            ):
                return 0
        with self.db.write() as conn:
            self.ledger.lock(conn)
            try:
                self.log.append(conn, kind, ref, body)
            finally:
                leaves = self.log.take(conn)
        self.log.committed(leaves)
        return 1

    def verify(self, caller: Identity) -> dict[str, Any]:
        caller.require_admin()
        self.log.checkpoint()
        return verify_ledger(self.log)

    def prove(self, entry: str) -> dict[str, Any]:
        """Proof for a log entry given by index or by transfer id."""
        if entry.isdigit():
            return self.log.prove(int(entry))
        with self.db.read() as conn:
            row = conn.execute(select(log_entries.c.seq).where(log_entries.c.ref == entry)).first()
            if (
                row is None
                and conn.execute(select(transfers.c.id).where(transfers.c.id == entry)).first() is None
            ):
                raise NotFound(f"no log entry or transfer {entry!r}")
        if row is None:
            raise NotFound(f"transfer {entry!r} is not in the log")
        self.log.checkpoint()
        return self.log.prove(int(row[0]))

    # -- background work -------------------------------------------------------------------------

    def run_once(self) -> dict[str, Any]:
        self.sync_log()
        billed = self.billing.run_once()
        rewarded = self.rewards.run_once()
        return {"billed": billed, "rewards": rewarded}

    def start(self) -> None:
        try:
            self.billing.release_orphans()  # calls cut off by the last stop; none run yet
        except Exception:
            log.exception("could not give back the holds of calls cut off by the last stop")

        def loop() -> None:
            while not self._stop.wait(self.config.loop_seconds):
                try:
                    self.run_once()
                except Exception:
                    log.exception("mining pass failed")

        self._thread = threading.Thread(target=loop, name="mining", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.run_once()
            self.log.checkpoint()
        except Exception:
            log.exception("final mining pass failed")


def submission_lookup(db: Database):
    """Breakthrough events and submissions from the path module, as the mining layer reads them."""
    from ..paths.leaderboard import get_submission, list_breakthroughs

    def events() -> list[dict[str, Any]]:
        return list_breakthroughs(db)

    def submission(submission_id: int) -> dict[str, Any] | None:
        return get_submission(db, submission_id)

    return events, submission
