"""Usage billing and revenue distribution.

Each usage record is billed exactly once (its transfers have ids derived from the record, applied in
one transaction with the "billed" marker): the caller pays the model's price; the platform fee goes to
the platform and a configured part of it to the reward pool; each investor in force receives its share
in proportion to its metered, undisputed compute for the model; the designer receives the rest.
Every split is exact (largest remainder), so the parts always sum to the charge.

A priced call is admitted only by a hold: once its prompt is tokenized, and before its first token,
the most it can cost (its prompt and ``max_tokens``, or the rest of the context, at the model's price)
moves from the caller's wallet to escrow, in the ledger's own transaction, so two calls (threads or
processes) cannot both spend the same credits. Billing the call's usage record gives the hold back and
charges the actual cost in one transaction; the hold is never smaller than that cost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from ..database import Database, insert_ignore, utc_now_iso
from ..errors import Forbidden, ProtocolError
from ..hub import Hub, Identity
from ..money import BPS_SCALE, MAX_MICRO, allocate, credits_from_json, format_credits, price_for_tokens
from ..runtime import UsageLog
from ..runtime.service import CallBound
from ..runtime.usage import usage as usage_records
from .agreements import Agreements, agreement_cap
from .ledger import FEES, REWARDS, InsufficientFunds, Ledger, Transfer
from .tables import billed, prices, transfers

log = logging.getLogger("iollm.mining")
CURSOR = "usage"
PRICE_REFRESH_S = 2.0  # how soon a price set by another process sizes this node's holds
HOLD_PREFIX = "usage:"  # a call's hold is named after its usage record, which settles it


def call_hold(usage_id: str) -> str:
    return HOLD_PREFIX + usage_id


def _priced(price: dict[str, Any] | None) -> bool:
    return price is not None and (price["prompt_per_million"] > 0 or price["completion_per_million"] > 0)


@dataclass(frozen=True)
class Fees:
    fee_bps: int = 1000  # platform fee: 10 % of every charge
    reward_bps: int = 5000  # half of the fee feeds the breakthrough reward pool

    def __post_init__(self) -> None:
        if not (0 <= self.fee_bps <= BPS_SCALE and 0 <= self.reward_bps <= BPS_SCALE):
            raise ValueError("fees are basis points between 0 and 10000")


def split_charge(charge: int, fees: Fees, investors: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Parts of ``charge``: platform, rewards, investor:<provider>..., designer. ``investors`` maps a
    provider to (share_bps, metered compute). Exact: the parts sum to ``charge``."""
    earning = {p: (bps, compute) for p, (bps, compute) in investors.items() if compute > 0 and bps > 0}
    investor_bps = min(sum(bps for bps, _ in earning.values()), BPS_SCALE - fees.fee_bps)
    top = allocate(
        charge,
        {"fee": fees.fee_bps, "investors": investor_bps, "designer": BPS_SCALE - fees.fee_bps - investor_bps},
    )
    fee = (
        allocate(top["fee"], {"platform": BPS_SCALE - fees.reward_bps, "rewards": fees.reward_bps})
        if top["fee"]
        else {"platform": 0, "rewards": 0}
    )
    parts = {"platform": fee["platform"], "rewards": fee["rewards"], "designer": top["designer"]}
    if top["investors"]:
        shares = allocate(top["investors"], {p: compute for p, (_, compute) in earning.items()})
        parts.update({f"investor:{p}": amount for p, amount in shares.items()})
    return parts


class Billing:
    def __init__(
        self,
        db: Database,
        hub: Hub,
        ledger: Ledger,
        agreements: Agreements,
        usage: UsageLog,
        fees: Fees,
        compute_for_model=lambda model: {},
    ) -> None:
        self.db = db
        self.hub = hub
        self.ledger = ledger
        self.agreements = agreements
        self.usage = usage
        self.fees = fees
        self.compute_for_model = compute_for_model
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._prices: dict[str, dict[str, Any]] | None = None  # the price table, read once
        self._prices_read = 0.0

    # -- prices ----------------------------------------------------------------------------------

    def set_price(
        self, caller: Identity, model: str, prompt_per_million: object, completion_per_million: object
    ) -> dict:
        """Prices arrive as decimal strings of credits per million tokens; they are stored, and
        answered, as integers of micro-credits per million tokens."""
        prompt = credits_from_json(prompt_per_million, "prompt_per_million", allow_zero=True)
        completion = credits_from_json(completion_per_million, "completion_per_million", allow_zero=True)
        repo = self.hub.get_repo(caller, "model", model)
        designer = caller.require_user()
        if repo.namespace == "path":
            head = self.hub.head(repo)
            if not head or self.hub.manifest(head).card.get("designer") != designer:
                raise Forbidden(f"only the designer of {model} may price it")
        else:
            caller.require_write(repo.namespace)
        row = {
            "model": model,
            "prompt_per_million": prompt,
            "completion_per_million": completion,
            "designer": designer,
            "updated_at": utc_now_iso(),
        }
        with self.db.write() as conn:
            conn.execute(prices.delete().where(prices.c.model == model))
            conn.execute(prices.insert().values(**row))
        self._prices = None  # this node's next call reads the new price
        return row

    def price(self, model: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(select(prices).where(prices.c.model == model)).first()
        return dict(row._mapping) if row else None

    def _price_of(self, model_id: str, repo: str) -> dict[str, Any] | None:
        """The price a call's hold is taken at: its repository's (an environment's base weights), else
        its model id's. It is on every inference call's path, so the price table (one row per priced
        model) is kept in memory: set_price refreshes it at once, and a price set by another process
        on a shared database is seen within ``PRICE_REFRESH_S``. ``bill`` reads the price afresh,
        so a stale entry can only size a hold, never a charge."""
        table = self._prices
        now = time.monotonic()
        if table is None or now - self._prices_read > PRICE_REFRESH_S:
            with self.db.read() as conn:
                table = {r.model: dict(r._mapping) for r in conn.execute(select(prices))}
            self._prices, self._prices_read = table, now
        return table.get(repo) or table.get(model_id)

    def _call_price(self, spec: Any) -> dict[str, Any] | None:
        return self._price_of(spec.model_id, spec.base_repo or spec.repo)

    def list_prices(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(select(prices).order_by(prices.c.model))]

    # -- admission (before inference) ------------------------------------------------------------

    def admit(self, caller: Identity, spec: Any) -> None:
        """Refuse, before the model is even loaded, a priced call from a caller with nothing to spend.
        What admits a call is the hold ``reserve`` takes once its prompt is tokenized."""
        price = self._call_price(spec)
        if not _priced(price):
            return
        if caller.anonymous:
            raise InsufficientFunds(f"{spec.model_id} is priced: call it with a token whose user has credits")
        if self.ledger.balance(f"user:{caller.name}") <= 0:
            raise InsufficientFunds(
                f"user {caller.name} has no credits free for a call to {spec.model_id}, which is priced. "
                f"Ask an admin: `iollm credits grant {caller.name} AMOUNT`"
            )

    def reserve(self, caller: Identity, spec: Any, bound: CallBound) -> None:
        """Hold the most a priced call can cost, or refuse it (402): atomic with every other hold and
        charge, so concurrent calls can never together spend more than the caller has."""
        price = self._call_price(spec)
        if not _priced(price):
            return
        assert price is not None
        if caller.anonymous:
            raise InsufficientFunds(f"{spec.model_id} is priced: call it with a token whose user has credits")
        if bound.completion_tokens is None:
            raise ProtocolError(
                f"{spec.model_id} is priced and its engine does not report a context length, so nothing "
                "bounds the answer: send max_tokens, and that many tokens are reserved",
                param="max_tokens",
            )
        try:
            most = price_for_tokens(
                bound.prompt_tokens,
                bound.completion_tokens,
                price["prompt_per_million"],
                price["completion_per_million"],
            )
        except ValueError:
            most = MAX_MICRO + 1
        if most <= 0:
            return
        account = f"user:{caller.name}"
        tokens = (
            f"{bound.prompt_tokens} prompt tokens{'' if bound.prompt_exact else ' at most'} and "
            f"{bound.completion_tokens} completion tokens"
        )
        if most <= MAX_MICRO:
            try:
                self.ledger.hold(call_hold(bound.call_id), account, most, f"{spec.model_id}: {tokens}")
                return
            except InsufficientFunds:
                pass
        free = self.ledger.balance(account)
        raise InsufficientFunds(
            f"user {caller.name} has {format_credits(free)} credits free; this call to {spec.model_id} "
            f"may cost up to {format_credits(min(most, MAX_MICRO))} ({tokens} at its price), which is "
            "held until the call ends. Send a lower max_tokens (without one, the whole context is "
            f"held) or ask an admin: `iollm credits grant {caller.name} AMOUNT`"
        )

    def release_orphans(self) -> int:
        """Give back the holds of calls that will never be billed: the node stopped before their usage
        record was written. Run when the node starts, before it serves a call."""
        released = 0
        for hold in self.ledger.pending_holds(HOLD_PREFIX):
            usage_id = hold["id"].removeprefix(HOLD_PREFIX)
            with self.db.read() as conn:
                found = conn.execute(select(usage_records.c.id).where(usage_records.c.id == usage_id)).first()
            if found is None:
                self.ledger.void(hold["id"])
                released += 1
        if released:
            log.warning("gave back %d holds of calls that ended without a usage record", released)
        return released

    # -- billing ---------------------------------------------------------------------------------

    def _cursor(self, conn: Connection) -> int:
        row = conn.execute(select(func.max(billed.c.ref_id)).where(billed.c.ref_type == "usage-seq")).first()
        return int(row[0]) if row and row[0] else 0

    def investors(self, model: str) -> dict[str, tuple[int, int, str]]:
        """provider -> (share_bps, metered compute, agreement id) for agreements in force, uncapped."""
        compute = self.compute_for_model(model)
        out: dict[str, tuple[int, int, str]] = {}
        for agreement in self.agreements.in_force(model):
            cap = agreement_cap(agreement["terms"])
            paid = self._paid(agreement["id"]) if cap else 0
            if cap and paid >= cap:
                continue
            for party in agreement["terms"]["providers"]:
                out[party["id"]] = (party["share_bps"], compute.get(party["id"], 0), agreement["id"])
        return out

    def _paid(self, agreement_id: str) -> int:
        with self.db.read() as conn:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
                        (transfers.c.code == "investor") & (transfers.c.memo == agreement_id)
                    )
                ).scalar_one()
            )

    def bill(self, record: dict[str, Any]) -> dict[str, Any]:
        """Charge one usage record and distribute it; exactly once per record. The call's hold (if it
        had one) is given back and the actual cost charged in the same transaction."""
        model = record["model"] if record["backend"] == "path" else record["repo"]
        price = self.price(model) or self.price(record["model"])
        cost = 0
        if price and record["status"] != "error":
            cost = price_for_tokens(
                record["prompt_tokens"],
                record["completion_tokens"],
                price["prompt_per_million"],
                price["completion_per_million"],
            )
        paying = bool(cost) and record["caller"] != "anonymous"
        investors = self.investors(model) if paying else {}
        payer = f"user:{record['caller']}"
        outcome: dict[str, Any] = {}

        def settle(conn: Connection) -> None:
            done = conn.execute(
                select(billed).where((billed.c.ref_type == "usage") & (billed.c.ref_id == record["id"]))
            ).first()
            if done is not None:  # billed before: only the cursor moves
                self.ledger.release_in(conn, call_hold(record["id"]))
                outcome.update(state=done.state, charge=int(done.amount), **json.loads(done.detail))
                self._mark(conn, record, None)
                return
            held = self.ledger.release_in(conn, call_hold(record["id"]), "the call's charge replaces it")
            state, detail, charge, batch = "free", {}, cost, []
            if paying:
                assert price is not None
                available = self.ledger.balance_in(conn, payer)
                if available < charge:  # only a call that had no hold, or outgrew it, can fall short
                    detail["shortfall"] = charge - available
                    charge = available
                    state = "short"
                else:
                    state = "billed"
                if charge:
                    parts = split_charge(
                        charge, self.fees, {p: (bps, c) for p, (bps, c, _) in investors.items()}
                    )
                    batch = self._transfers(record, model, price["designer"], payer, charge, parts, investors)
                    detail["parts"] = parts
            elif cost:
                state, detail, charge = "refused", {"reason": "anonymous caller"}, 0
            if held:
                detail["held"] = held
            self.ledger.apply_batch(conn, batch)
            self._mark(conn, record, {"amount": charge, "state": state, "detail": json.dumps(detail)})
            outcome.update(state=state, charge=charge, **detail)

        self.ledger.transfer(extra=settle)  # hold, charge, split, billed marker and cursor: one transaction
        return {"usage": record["id"], **outcome}

    @staticmethod
    def _mark(conn: Connection, record: dict[str, Any], row: dict[str, Any] | None) -> None:
        """Record the outcome (``row``) of billing ``record`` and move the cursor past it."""
        now = utc_now_iso()
        if row is not None:
            insert_ignore(
                conn, billed, [{"ref_type": "usage", "ref_id": record["id"], **row, "created_at": now}]
            )
        conn.execute(billed.delete().where(billed.c.ref_type == "usage-seq"))
        conn.execute(
            billed.insert().values(
                ref_type="usage-seq",
                ref_id=str(record["seq"]).zfill(20),
                amount=0,
                state="cursor",
                detail="{}",
                created_at=now,
            )
        )

    def _transfers(self, record, model, designer, payer, charge, parts, investors) -> list[Transfer]:
        base = f"usage:{record['id']}"
        account = f"model:{model}"
        out = [
            Transfer(
                f"{base}:charge",
                payer,
                account,
                charge,
                "charge",
                "usage",
                record["id"],
                f"{record['prompt_tokens']}+{record['completion_tokens']} tokens",
            )
        ]
        for key, amount in sorted(parts.items()):
            if amount <= 0:
                continue
            if key == "platform":
                out.append(Transfer(f"{base}:fee", account, FEES, amount, "fee", "usage", record["id"]))
            elif key == "rewards":
                out.append(
                    Transfer(
                        f"{base}:rewards", account, REWARDS, amount, "reward_pool", "usage", record["id"]
                    )
                )
            elif key == "designer":
                out.append(
                    Transfer(
                        f"{base}:designer",
                        account,
                        f"designer:{designer}",
                        amount,
                        "designer",
                        "usage",
                        record["id"],
                    )
                )
            else:
                provider = key.removeprefix("investor:")
                out.append(
                    Transfer(
                        f"{base}:investor:{provider}",
                        account,
                        f"provider:{provider}",
                        amount,
                        "investor",
                        "usage",
                        record["id"],
                        investors[provider][2],
                    )
                )
        return out

    def run_once(self, limit: int = 500) -> int:
        """Bill every usage record written since the last pass; returns how many. Records that cost
        nothing (their model has no price, or the call failed) are settled together, in one
        transaction per run of them: a node serving free models commits once per pass, not once per
        call, which keeps the database off the serving path's CPU."""
        with self._lock:
            with self.db.read() as conn:
                cursor = self._cursor(conn)
                priced = {r.model: dict(r._mapping) for r in conn.execute(select(prices))}
            records = self.usage.since(cursor, limit)
            count = 0
            free: list[dict[str, Any]] = []  # a run of records that cost nothing, not settled yet
            for record in records:
                if self._costs_nothing(record, priced):
                    free.append(record)
                    continue
                try:
                    if free:
                        self.settle_free(free)
                        count, free = count + len(free), []
                    self.bill(record)
                    count += 1
                except Exception:
                    log.exception("billing usage %s failed; will retry", record["id"])
                    return count
            if free:
                try:
                    self.settle_free(free)
                    count += len(free)
                except Exception:
                    log.exception("settling %d free usage records failed; will retry", len(free))
            return count

    @staticmethod
    def _costs_nothing(record: dict[str, Any], priced: dict[str, dict[str, Any]]) -> bool:
        model = record["model"] if record["backend"] == "path" else record["repo"]
        price = priced.get(model) or priced.get(record["model"])
        return record["status"] == "error" or not _priced(price)

    def settle_free(self, records: list[dict[str, Any]]) -> None:
        """Settle records that cost nothing, in one transaction: each one's hold (a price removed after
        the call began leaves one) goes back, each gets its "free" marker once, and the cursor moves
        past the last. What ``bill`` would do for each, with one commit instead of one per record."""

        def settle(conn: Connection) -> None:
            ids = [record["id"] for record in records]
            done = {
                row.ref_id
                for row in conn.execute(
                    select(billed.c.ref_id).where((billed.c.ref_type == "usage") & billed.c.ref_id.in_(ids))
                )
            }
            now, rows = utc_now_iso(), []
            for record in records:
                held = self.ledger.release_in(conn, call_hold(record["id"]), "the call cost nothing")
                if record["id"] not in done:
                    detail = json.dumps({"held": held} if held else {})
                    rows.append(
                        {"ref_type": "usage", "ref_id": record["id"], "amount": 0, "state": "free"}
                        | {"detail": detail, "created_at": now}
                    )
            if rows:
                insert_ignore(conn, billed, rows)
            self._mark(conn, records[-1], None)

        self.ledger.transfer(extra=settle)

    def start(self, every: float = 0.5) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    self.run_once()
                except Exception:
                    log.exception("billing pass failed")

        self._thread = threading.Thread(target=loop, name="billing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.run_once()  # bill what was metered up to shutdown
