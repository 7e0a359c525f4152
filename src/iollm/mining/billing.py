"""Usage billing and revenue distribution.

Each usage record is billed exactly once (its transfers have ids derived from the record, applied in
one transaction with the "billed" marker): the caller pays the model's price; the platform fee goes to
the platform and a configured part of it to the reward pool; each investor in force receives its share
in proportion to its metered, undisputed compute for the model; the designer receives the rest.
Every split is exact (largest remainder), so the parts always sum to the charge.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from ..database import Database, insert_ignore, utc_now_iso
from ..hub import Hub, Identity
from ..money import BPS_SCALE, MAX_MICRO, allocate, price_for_tokens
from ..protocol import Forbidden, ProtocolError
from ..runtime import UsageLog
from .agreements import Agreements
from .ledger import FEES, REWARDS, InsufficientFunds, Ledger, Transfer
from .tables import billed, prices, transfers

log = logging.getLogger("iollm.mining")
CURSOR = "usage"


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

    # -- prices ----------------------------------------------------------------------------------

    def set_price(
        self, caller: Identity, model: str, prompt_per_million: int, completion_per_million: int
    ) -> dict:
        repo = self.hub.get_repo(caller, "model", model)
        designer = caller.require_user()
        if repo.namespace == "path":
            head = self.hub.refs(repo)["branches"].get("main")
            if not head or self.hub.manifest(head).card.get("designer") != designer:
                raise Forbidden(f"only the designer of {model} may price it")
        else:
            caller.require_write(repo.namespace)
        for value in (prompt_per_million, completion_per_million):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MICRO:
                raise ProtocolError("prices are non-negative integers of micro-credits per million tokens")
        row = {
            "model": model,
            "prompt_per_million": prompt_per_million,
            "completion_per_million": completion_per_million,
            "designer": designer,
            "updated_at": utc_now_iso(),
        }
        with self.db.write() as conn:
            conn.execute(prices.delete().where(prices.c.model == model))
            conn.execute(prices.insert().values(**row))
        return row

    def price(self, model: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(select(prices).where(prices.c.model == model)).first()
        return dict(row._mapping) if row else None

    def _price_of(self, model_id: str, repo: str) -> dict[str, Any] | None:
        """The price of a model id, else of its repository: one read on every inference call's path."""
        with self.db.read() as conn:
            rows = {
                r.model: dict(r._mapping)
                for r in conn.execute(select(prices).where(prices.c.model.in_({model_id, repo})))
            }
        return rows.get(model_id) or rows.get(repo)

    def list_prices(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(select(prices).order_by(prices.c.model))]

    # -- admission (before inference) ------------------------------------------------------------

    def admit(self, caller: Identity, spec: Any) -> None:
        """Refuse a call to a priced model when the caller cannot pay for a short answer."""
        price = self._price_of(spec.model_id, spec.repo)
        if not price or (price["prompt_per_million"] == 0 and price["completion_per_million"] == 0):
            return
        if caller.anonymous:
            raise InsufficientFunds(f"{spec.model_id} is priced: call it with a token whose user has credits")
        needed = price_for_tokens(256, 256, price["prompt_per_million"], price["completion_per_million"])
        balance = self.ledger.balance(f"user:{caller.name}")
        if balance < needed:
            raise InsufficientFunds(
                f"user {caller.name} has {balance} micro-credits; a call to {spec.model_id} needs at least "
                f"{needed} (512 tokens at its price). Ask an admin: `iollm credits grant {caller.name} AMOUNT`"
            )

    # -- billing ---------------------------------------------------------------------------------

    def _cursor(self, conn: Connection) -> int:
        row = conn.execute(select(func.max(billed.c.ref_id)).where(billed.c.ref_type == "usage-seq")).first()
        return int(row[0]) if row and row[0] else 0

    def investors(self, model: str) -> dict[str, tuple[int, int, str]]:
        """provider -> (share_bps, metered compute, agreement id) for agreements in force, uncapped."""
        compute = self.compute_for_model(model)
        out: dict[str, tuple[int, int, str]] = {}
        for agreement in self.agreements.in_force(model):
            cap = agreement["terms"].get("cap")
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
        """Charge one usage record and distribute it; exactly once per record."""
        model = record["model"] if record["backend"] == "path" else record["repo"]
        price = self.price(model) or self.price(record["model"])
        charge = 0
        if price and record["status"] != "error":
            charge = price_for_tokens(
                record["prompt_tokens"],
                record["completion_tokens"],
                price["prompt_per_million"],
                price["completion_per_million"],
            )
        state, detail, batch = "free", {}, []
        if charge and record["caller"] != "anonymous":
            payer = f"user:{record['caller']}"
            available = self.ledger.balance(payer)
            if available < charge:
                detail["shortfall"] = charge - available
                charge = available
                state = "short"
            else:
                state = "billed"
            if charge:
                investors = self.investors(model)
                parts = split_charge(charge, self.fees, {p: (bps, c) for p, (bps, c, _) in investors.items()})
                batch = self._transfers(record, model, price["designer"], payer, charge, parts, investors)
                detail["parts"] = parts
        elif charge:
            state, detail = "refused", {"reason": "anonymous caller"}
            charge = 0

        def mark(conn: Connection) -> None:
            insert_ignore(
                conn,
                billed,
                [
                    {
                        "ref_type": "usage",
                        "ref_id": record["id"],
                        "amount": charge,
                        "state": state,
                        "detail": json.dumps(detail),
                        "created_at": utc_now_iso(),
                    },
                ],
            )
            conn.execute(billed.delete().where(billed.c.ref_type == "usage-seq"))
            conn.execute(
                billed.insert().values(
                    ref_type="usage-seq",
                    ref_id=str(record["seq"]).zfill(20),
                    amount=0,
                    state="cursor",
                    detail="{}",
                    created_at=utc_now_iso(),
                )
            )

        self.ledger.transfer(*batch, extra=mark)  # transfers, billed marker and cursor: one transaction
        return {"usage": record["id"], "state": state, "charge": charge, **detail}

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
        """Bill every usage record written since the last pass; returns how many."""
        with self._lock:
            with self.db.read() as conn:
                cursor = self._cursor(conn)
            records = self.usage.since(cursor, limit)
            count = 0
            for record in records:
                try:
                    self.bill(record)
                    count += 1
                except Exception:
                    log.exception("billing usage %s failed; will retry", record["id"])
                    break
            return count

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
