"""Benchmark of the joint-mining ledger (issue #6). Prints one JSON object.

In one run, on SQLite and on PostgreSQL (when IOLLM_TEST_POSTGRES or scripts/postgres.sh gives a server),
each figure next to a bound measured in the same run on the same database (the machine may be shared,
so the ratios are the comparable numbers; CPU seconds of this process are given where load matters):

1. durable transfers per second, every one acknowledged only after its transaction is on disk:
   - ``sequential``: one caller, one transfer per call, vs plain inserts of the same rows, one
     transaction each (the bound when every transfer pays its own fsync);
   - ``concurrent``: 4, 16 and 64 callers (``BENCH_CALLERS``; as a node's request threads), whose
     transfers the ledger group-commits; vs the same plain inserts one transaction each (what a
     ledger without group commit is bounded by) and vs plain inserts of the same rows in as many
     transactions as the ledger needed (the bound for that many fsyncs);
2. one charge split across 10,000 investors, exactly, and applied atomically (10,003 transfers), vs
   plain inserts of the same rows in one transaction;
3. ``ledger verify`` over 1 million log entries (generated through the ledger in large batches), vs
   just reading the rows it reads.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, select

sys.path.insert(0, str(Path(__file__).parent))
from _harness import emit, scratch
from iollm import signing
from iollm.database import open_database
from iollm.mining.billing import Fees, split_charge
from iollm.mining.ledger import FIELDS, ISSUANCE, Ledger, Transfer
from iollm.mining.tables import insert_many, log_entries, metadata, transfers
from iollm.mining.tamperlog import TamperLog
from iollm.mining.verify import verify_ledger

SEQUENTIAL = int(os.environ.get("BENCH_SEQUENTIAL", "600"))
TRANSFERS = int(os.environ.get("BENCH_TRANSFERS", "4000"))  # per number of callers
CALLERS = [int(n) for n in os.environ.get("BENCH_CALLERS", "4,16,64").split(",")]
VERIFY_ENTRIES = int(os.environ.get("BENCH_VERIFY_ENTRIES", "1000000"))
ROOT = Path(__file__).resolve().parent.parent

plain = MetaData()
plain_rows = Table(
    "plain_transfers",
    plain,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(200), unique=True),
    Column("debit", String(200)),
    Column("credit", String(200)),
    Column("amount", BigInteger),
    Column("code", String(24)),
    Column("ref_type", String(24)),
    Column("ref_id", String(200)),
    Column("memo", Text),
    Column("digest", String(64)),
    Column("created_at", String(32)),
)


def postgres_url() -> str | None:
    base = os.environ.get("IOLLM_TEST_POSTGRES")
    if not base:
        try:
            base = subprocess.run(
                [str(ROOT / "scripts" / "postgres.sh")], capture_output=True, text=True, check=True
            ).stdout.strip()
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


def move(prefix: str, i: int) -> Transfer:
    return Transfer(f"{prefix}{i}", "user:payer", f"user:u{i % 50}", 1 + i % 7, "move", "grant", str(i))


def plain_row(transfer: Transfer) -> dict[str, Any]:
    """The row the ledger stores for ``transfer``, for the plain-insert bound."""
    return {
        **transfer.content(),
        "id": "plain:" + transfer.id,
        "digest": transfer.digest(),
        "created_at": "x",
    }


def plain_inserts(ledger: Ledger, batch: list[Transfer], commits: int) -> float:
    """Insert the rows of ``batch`` in ``commits`` equal durable transactions; rows per second."""
    rows = [plain_row(t) for t in batch]
    size = -(-len(rows) // commits)
    started = time.perf_counter()
    for start in range(0, len(rows), size):
        with ledger.db.write() as conn:
            insert_many(conn, plain_rows, rows[start : start + size])  # as fast a path as the ledger's
    return len(rows) / (time.perf_counter() - started)


def sequential(ledger: Ledger) -> dict[str, Any]:
    batch = [move("s", i) for i in range(SEQUENTIAL)]
    started = time.perf_counter()
    for transfer in batch:
        ledger.transfer(transfer)
    ours = len(batch) / (time.perf_counter() - started)
    bound = plain_inserts(ledger, batch, len(batch))
    return {
        "transfers": len(batch),
        "transfers_per_s": round(ours, 1),
        "plain_one_commit_each_per_s": round(bound, 1),
        "ratio": round(ours / bound, 3),
    }


def run_callers(ledger: Ledger, batch: list[Transfer], callers: int) -> tuple[float, list[float]]:
    """``callers`` threads each transferring their share of ``batch``; wall seconds and latencies."""
    latencies: list[float] = []
    start_line = threading.Barrier(callers + 1)

    def caller(mine: list[Transfer]) -> None:
        start_line.wait()
        for transfer in mine:
            began = time.perf_counter()
            ledger.transfer(transfer)
            latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=caller, args=(batch[k::callers],)) for k in range(callers)]
    for thread in threads:
        thread.start()
    start_line.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def concurrent(ledger: Ledger, callers: int, one_commit_each: float) -> dict[str, Any]:
    batch = [move(f"c{callers}-", i) for i in range(TRANSFERS)]
    commits_before = ledger.commits
    cpu = time.process_time()
    seconds, latencies = run_callers(ledger, batch, callers)
    cpu = time.process_time() - cpu
    commits = ledger.commits - commits_before
    ours = len(batch) / seconds
    grouped_bound = plain_inserts(ledger, batch, commits)
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "callers": callers,
        "transfers": len(batch),
        "transfers_per_s": round(ours, 1),
        "cpu_s_per_1000": round(cpu * 1000 / len(batch), 3),
        "commits": commits,
        "transfers_per_commit": round(len(batch) / commits, 1),
        "latency_ms": {"p50": round(quantiles[49] * 1000, 1), "p99": round(quantiles[98] * 1000, 1)},
        "ratio_to_one_commit_each": round(ours / one_commit_each, 3),
        "plain_same_commits_per_s": round(grouped_bound, 1),
        "ratio_to_same_commits": round(ours / grouped_bound, 3),
        "target_met": ours >= 1000,
    }


def throughput(ledger: Ledger) -> dict[str, Any]:
    ledger.transfer(Transfer("seed", ISSUANCE, "user:payer", 10**15, "grant", "grant", "seed"))
    alone = sequential(ledger)
    bound = alone["plain_one_commit_each_per_s"]
    return {"sequential": alone, "concurrent": [concurrent(ledger, n, bound) for n in CALLERS]}


def split_batch(charge: int, parts: dict[str, int]) -> list[Transfer]:
    batch = [Transfer("big:charge", "user:whale", "model:demo/m", charge, "charge", "usage", "big")]
    named = {"platform": "platform:fees", "rewards": "platform:rewards", "designer": "designer:demo"}
    for key, amount in parts.items():
        if amount:
            account = named.get(key, "provider:" + key.removeprefix("investor:"))
            batch.append(Transfer(f"big:{key}", "model:demo/m", account, amount, "split", "usage", "big"))
    return batch


def ten_thousand_way(ledger: Ledger) -> dict[str, Any]:
    investors = {f"p{i:05d}": (5, 1_000 + (i * 7919) % 5_000) for i in range(10_000)}
    charge = 123_456_789_012
    ledger.transfer(Transfer("big-seed", ISSUANCE, "user:whale", charge, "grant", "grant", "big"))
    cpu = time.process_time()
    started = time.perf_counter()
    parts = split_charge(charge, Fees(1000, 5000), investors)
    split_s = time.perf_counter() - started
    batch = split_batch(charge, parts)
    ledger.transfer(*batch)
    total_s = time.perf_counter() - started
    cpu = time.process_time() - cpu
    assert sum(parts.values()) == charge and ledger.balance("model:demo/m") == 0
    bound_s = len(batch) / plain_inserts(ledger, batch, 1)
    return {
        "investors": 10_000,
        "split_s": round(split_s, 4),
        "split_and_apply_s": round(total_s, 3),
        "cpu_s": round(cpu, 3),
        "transfers_applied": len(batch),
        "plain_insert_same_rows_s": round(bound_s, 3),
        "ratio_to_plain": round(total_s / bound_s, 2),
        "exact": True,
        "target_met": total_s < 1.0,
    }


def generate(ledger: Ledger, entries: int) -> float:
    """Fill the log up to ``entries`` through the ledger, 20,000 transfers per call; seconds."""
    started = time.perf_counter()
    made = ledger.log.tree.size
    while made < entries:
        n = min(20_000, entries - made)
        ledger.transfer(
            *(
                Transfer(f"v{k}", ISSUANCE, f"user:v{k % 1000}", 1, "grant", "grant", str(k))
                for k in range(made, made + n)
            )
        )
        made += n
    return time.perf_counter() - started


def read_only(ledger: Ledger) -> float:
    """Seconds to stream just the rows verify reads: the bound on verifying."""
    started = time.perf_counter()
    with ledger.db.read() as conn:
        for query in (
            select(log_entries.c.seq, log_entries.c.entry, log_entries.c.leaf_hash).order_by(
                log_entries.c.seq
            ),
            select(*(transfers.c[name] for name in FIELDS)).order_by(transfers.c.seq),  # as verify
        ):
            for _ in conn.execution_options(yield_per=20_000).execute(query).partitions():
                pass
    return time.perf_counter() - started


def verify_million(ledger: Ledger) -> dict[str, Any]:
    generate_s = generate(ledger, VERIFY_ENTRIES)
    ledger.log.checkpoint()
    cpu = time.process_time()
    report = verify_ledger(ledger.log)
    cpu = time.process_time() - cpu
    bound_s = read_only(ledger)
    return {
        "entries": report["entries"],
        "verify_s": report["seconds"],
        "cpu_s": round(cpu, 2),
        "read_rows_only_s": round(bound_s, 2),
        "ratio_to_read_only": round(report["seconds"] / bound_s, 2),
        "ok": report["ok"],
        "generate_s": round(generate_s, 1),
        "target_met": report["ok"] and report["seconds"] < 60,
    }


def section(fn: Callable[[Ledger], dict[str, Any]], ledger: Ledger) -> dict[str, Any]:
    try:
        return fn(ledger)
    except Exception as exc:  # report the others even if one fails
        return {"error": f"{type(exc).__name__}: {exc}"}


def run(url: str) -> dict[str, Any]:
    ledger = open_ledger(url)
    result = {
        "throughput": section(throughput, ledger),
        "split_10000": section(ten_thousand_way, ledger),
        "verify_1m": section(verify_million, ledger),
    }
    ledger.db.dispose()
    return result


def drop_database(url: str) -> None:
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")


def main() -> None:
    with scratch("iollm-bench-ledger-") as work:
        result: dict[str, Any] = {
            "benchmark": "ledger",
            "machine": {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)},
            "sqlite": run(str(work / "ledger.sqlite")),
        }
        url = postgres_url()
        result["postgresql"] = run(url) if url else {"skipped": "no PostgreSQL server"}
        if url:
            drop_database(url)
        result["machine"]["load_1m_end"] = round(os.getloadavg()[0], 2)
    emit(result)


if __name__ == "__main__":
    main()
