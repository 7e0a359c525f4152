"""Benchmark of the joint-mining ledger (issue #6). Prints one JSON object.

In one run, on SQLite and on PostgreSQL (when IOLLM_TEST_POSTGRES or scripts/postgres.sh gives a server):
1. sustained durable transfers per second (one transaction each, logged) vs plain inserts of the same
   rows (one transaction each, same durability): the bound;
2. one charge split across 10,000 investors (exact split + all transfers applied atomically);
3. ``ledger verify`` over 1 million log entries (generated through the ledger in large batches).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

sys.path.insert(0, str(Path(__file__).parent))
from _harness import emit, scratch  # noqa: E402

from iollm import signing  # noqa: E402
from iollm.database import open_database  # noqa: E402
from iollm.mining.billing import Fees, split_charge  # noqa: E402
from iollm.mining.ledger import ISSUANCE, Ledger, Transfer  # noqa: E402
from iollm.mining.tables import metadata  # noqa: E402
from iollm.mining.tamperlog import TamperLog  # noqa: E402
from iollm.mining.verify import verify_ledger  # noqa: E402

TRANSFERS = int(os.environ.get("BENCH_TRANSFERS", "2000"))
VERIFY_ENTRIES = int(os.environ.get("BENCH_VERIFY_ENTRIES", "1000000"))
ROOT = Path(__file__).resolve().parent.parent

plain = MetaData()
plain_rows = Table(
    "plain_transfers", plain,
    Column("seq", Integer, primary_key=True, autoincrement=True), Column("id", String(200), unique=True),
    Column("debit", String(200)), Column("credit", String(200)), Column("amount", BigInteger),
    Column("code", String(24)), Column("ref_type", String(24)), Column("ref_id", String(200)), Column("memo", Text),
    Column("digest", String(64)), Column("created_at", String(32)),
)


def postgres_url() -> str | None:
    base = os.environ.get("IOLLM_TEST_POSTGRES")
    if not base:
        try:
            base = subprocess.run([str(ROOT / "scripts" / "postgres.sh")], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (subprocess.CalledProcessError, OSError):
            return None
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


def open_ledger(url: str) -> Ledger:
    db = open_database(url)
    db.create(metadata)
    db.create(plain)
    return Ledger(db, TamperLog(db, signing.generate_key()))


def throughput(ledger: Ledger) -> dict:
    ledger.transfer(Transfer("seed", ISSUANCE, "user:payer", 10**15, "grant", "grant", "seed"))
    started = time.perf_counter()
    for i in range(TRANSFERS):
        ledger.transfer(Transfer(f"t{i}", "user:payer", f"user:u{i % 50}", 1 + i % 7, "move", "grant", str(i)))
    ours = TRANSFERS / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(TRANSFERS):
        with ledger.db.write() as conn:
            conn.execute(plain_rows.insert().values(
                id=f"p{i}", debit="user:payer", credit=f"user:u{i % 50}", amount=1 + i % 7, code="move",
                ref_type="grant", ref_id=str(i), memo="", digest="0" * 64, created_at="2026-01-01T00:00:00Z"))
    bound = TRANSFERS / (time.perf_counter() - started)
    return {"transfers": TRANSFERS, "transfers_per_s": round(ours, 1), "plain_inserts_per_s": round(bound, 1),
            "ratio": round(ours / bound, 3), "target_met": ours >= 1000}


def ten_thousand_way(ledger: Ledger) -> dict:
    investors = {f"p{i:05d}": (5, 1_000 + (i * 7919) % 5_000) for i in range(10_000)}
    charge = 123_456_789_012
    ledger.transfer(Transfer("big-seed", ISSUANCE, "user:whale", charge, "grant", "grant", "big"))
    started = time.perf_counter()
    parts = split_charge(charge, Fees(1000, 5000), investors)
    split_s = time.perf_counter() - started
    batch = [Transfer("big:charge", "user:whale", "model:demo/m", charge, "charge", "usage", "big")]
    for key, amount in parts.items():
        if amount:
            account = {"platform": "platform:fees", "rewards": "platform:rewards", "designer": "designer:demo"}.get(
                key, "provider:" + key.removeprefix("investor:"))
            batch.append(Transfer(f"big:{key}", "model:demo/m", account, amount, "split", "usage", "big"))
    ledger.transfer(*batch)
    total_s = time.perf_counter() - started
    assert sum(parts.values()) == charge and ledger.balance("model:demo/m") == 0
    return {"investors": 10_000, "split_s": round(split_s, 4), "split_and_apply_s": round(total_s, 3),
            "transfers_applied": len(batch), "exact": True, "target_met": total_s < 1.0}


def verify_million(ledger: Ledger) -> dict:
    have = ledger.log.tree.size
    started = time.perf_counter()
    batch_size = 20_000
    made = 0
    while have + made < VERIFY_ENTRIES:
        n = min(batch_size, VERIFY_ENTRIES - have - made)
        ledger.transfer(*(Transfer(f"v{made + i}", ISSUANCE, f"user:v{(made + i) % 1000}", 1, "grant", "grant",
                                   str(made + i)) for i in range(n)))
        made += n
    generate_s = time.perf_counter() - started
    ledger.log.checkpoint()
    report = verify_ledger(ledger.log)
    return {"entries": report["entries"], "verify_s": report["seconds"], "ok": report["ok"],
            "generate_s": round(generate_s, 1), "target_met": report["ok"] and report["seconds"] < 60}


def run(url: str) -> dict:
    ledger = open_ledger(url)
    result = {"throughput": throughput(ledger), "split_10000": ten_thousand_way(ledger)}
    result["verify_1m"] = verify_million(ledger)
    ledger.db.dispose()
    return result


def main() -> None:
    with scratch("iollm-bench-ledger-") as work:
        result = {"benchmark": "ledger", "machine": {"cpus": os.cpu_count()},
                  "sqlite": run(str(work / "ledger.sqlite"))}
        url = postgres_url()
        result["postgresql"] = run(url) if url else {"skipped": "no PostgreSQL server"}
    emit(result)


if __name__ == "__main__":
    main()
