"""Breakthrough rewards: a new record on a leaderboard is paid from the reward pool once its challenge
window has passed, split between the path's designer and the providers whose metered compute evaluated
it. A graph with the same canonical hash as an earlier paid record earns nothing (the earlier
submission wins the tie)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from ..database import Database, insert_ignore, utc_now_iso
from ..money import BPS_SCALE, allocate
from .ledger import REWARDS, Ledger, Transfer
from .tables import billed


class Rewards:
    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        breakthroughs,
        submission,
        compute_for_jobs,
        reward_amount: int,
        provider_bps: int = 5000,
        window_seconds: float = 86400.0,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.breakthroughs = breakthroughs  # () -> list of breakthrough events (from the path module)
        self.submission = submission  # id -> submission (with its evaluation jobs, if any)
        self.compute_for_jobs = compute_for_jobs  # (job ids, designer) -> {provider: metered microseconds}
        self.reward_amount = reward_amount
        self.provider_bps = provider_bps
        self.window = timedelta(seconds=window_seconds)

    def _handled(self) -> dict[str, dict[str, Any]]:
        with self.db.read() as conn:
            return {
                r.ref_id: {"state": r.state, **json.loads(r.detail)}
                for r in conn.execute(select(billed).where(billed.c.ref_type == "breakthrough"))
            }

    def run_once(self, now: datetime | None = None) -> list[dict[str, Any]]:
        now = now or datetime.now(UTC)
        handled = self._handled()
        paid_hashes = {d.get("graph_hash") for d in handled.values() if d["state"] == "paid"}
        results = []
        for event in sorted(self.breakthroughs(), key=lambda e: e["id"]):
            key = str(event["id"])
            if key in handled:
                continue
            created = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00"))
            if now - created < self.window:
                continue  # still open to challenge
            if event["graph_hash"] in paid_hashes:
                results.append(
                    self._record(event, "skipped", 0, {"reason": "same graph as an earlier record"})
                )
                continue
            results.append(self._pay(event))
            paid_hashes.add(event["graph_hash"])
        return results

    def _record(
        self, event: dict[str, Any], state: str, amount: int, detail: dict[str, Any], batch=()
    ) -> dict:
        detail = {**detail, "graph_hash": event["graph_hash"], "designer": event["designer"]}

        def mark(conn) -> None:
            insert_ignore(
                conn,
                billed,
                [
                    {
                        "ref_type": "breakthrough",
                        "ref_id": str(event["id"]),
                        "amount": amount,
                        "state": state,
                        "detail": json.dumps(detail),
                        "created_at": utc_now_iso(),
                    }
                ],
            )

        self.ledger.transfer(*batch, extra=mark)
        return {"breakthrough": event["id"], "state": state, "amount": amount, **detail}

    def _pay(self, event: dict[str, Any]) -> dict[str, Any]:
        pool = self.ledger.balance(REWARDS)
        amount = min(self.reward_amount, pool)
        if amount <= 0:
            return self._record(event, "unfunded", 0, {"reason": "the reward pool is empty"})
        submission = self.submission(event["submission_id"]) or {}
        jobs = submission.get("jobs") or []
        compute = (
            {p: c for p, c in self.compute_for_jobs(jobs, event["designer"]).items() if c > 0} if jobs else {}
        )
        provider_bps = self.provider_bps if compute else 0
        top = allocate(amount, {"designer": BPS_SCALE - provider_bps, "providers": provider_bps})
        parts = {f"designer:{event['designer']}": top["designer"]}
        if top["providers"]:
            parts.update({f"provider:{p}": a for p, a in allocate(top["providers"], compute).items()})
        batch = [
            Transfer(
                f"breakthrough:{event['id']}:{account}",
                REWARDS,
                account,
                value,
                "reward",
                "breakthrough",
                str(event["id"]),
                f"{event['suite']} record {event['graph_hash'][:12]}",
            )
            for account, value in sorted(parts.items())
            if value > 0
        ]
        return self._record(event, "paid", amount, {"parts": parts}, batch)
