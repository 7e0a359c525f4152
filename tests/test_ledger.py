"""The double-entry ledger, its tamper-evident log and revenue splits, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from iollm import signing
from iollm.database import open_database
from iollm.mining.billing import Fees, split_charge
from iollm.mining.ledger import ISSUANCE, InsufficientFunds, Ledger, Transfer
from iollm.mining.tables import accounts, checkpoints, log_entries, metadata, transfers
from iollm.mining.tamperlog import TamperLog, check_proof
from iollm.mining.verify import verify_ledger
from iollm.money import MAX_MICRO
from iollm.protocol import Conflict, ProtocolError


def open_ledger(url: str, key=None) -> tuple[Ledger, TamperLog]:  # noqa: ANN001
    db = open_database(url)
    db.create(metadata)
    log = TamperLog(db, key or signing.generate_key())
    return Ledger(db, log), log


def grant(ledger: Ledger, user: str, amount: int, ident: str) -> None:
    ledger.transfer(Transfer(ident, ISSUANCE, f"user:{user}", amount, "grant", "grant", ident))


def test_transfers_are_exact_idempotent_and_never_overdraw(database_url: str) -> None:
    ledger, log = open_ledger(database_url)
    grant(ledger, "alice", 1_000, "g1")
    pay = Transfer("t1", "user:alice", "user:bob", 400, "gift", "grant", "t1")
    ledger.transfer(pay)
    assert ledger.transfer(pay) == []  # same id, same content: a no-op
    with pytest.raises(Conflict):
        ledger.transfer(Transfer("t1", "user:alice", "user:bob", 401, "gift", "grant", "t1"))
    with pytest.raises(InsufficientFunds):
        ledger.transfer(Transfer("t2", "user:alice", "user:bob", 601, "gift", "grant", "t2"))
    for bad in (0, -5, MAX_MICRO + 1):
        with pytest.raises(ProtocolError):
            ledger.transfer(Transfer(f"bad{bad}", "user:alice", "user:bob", bad, "gift", "grant", "x"))
    with pytest.raises(ProtocolError, match="floats"):
        ledger.transfer(Transfer("float", "user:alice", "user:bob", 1.5, "gift", "grant", "x"))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        ledger.transfer(Transfer("self", "user:alice", "user:alice", 1, "gift", "grant", "x"))
    balances = ledger.balances()
    assert balances == {ISSUANCE: -1_000, "user:alice": 600, "user:bob": 400}
    assert sum(balances.values()) == 0
    # a batch is all or nothing
    with pytest.raises(InsufficientFunds):
        ledger.transfer(Transfer("b1", "user:bob", "user:carol", 100, "x", "grant", "b"),
                        Transfer("b2", "user:alice", "user:carol", 10_000, "x", "grant", "b"))
    assert ledger.balance("user:carol") == 0 and ledger.balance("user:bob") == 400
    report = verify_ledger(log)
    assert report["ok"], report["problems"]
    assert report["transfers"] == 2


def test_holds_reserve_then_post_or_void(database_url: str) -> None:
    ledger, log = open_ledger(database_url)
    grant(ledger, "alice", 1_000, "g")
    ledger.hold("h1", "user:alice", 700)
    assert ledger.balance("user:alice") == 300
    with pytest.raises(InsufficientFunds):
        ledger.hold("h2", "user:alice", 301)
    with pytest.raises(ProtocolError):
        ledger.post("h1", 701, "user:bob")
    ledger.post("h1", 500, "user:bob")
    ledger.post("h1", 500, "user:bob")  # posting again is a no-op
    assert ledger.balance("user:bob") == 500 and ledger.balance("user:alice") == 500
    ledger.hold("h3", "user:alice", 200)
    ledger.void("h3")
    assert ledger.balance("user:alice") == 500
    with pytest.raises(Conflict):
        ledger.post("h3", 1, "user:bob")
    assert verify_ledger(log)["ok"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 500)), min_size=1, max_size=40))
def test_random_transfers_keep_every_invariant(tmp_path_factory, moves) -> None:  # noqa: ANN001
    ledger, log = open_ledger(str(tmp_path_factory.mktemp("ledger") / "db.sqlite"))
    users = ["a", "b", "c", "d"]
    for user in users:
        grant(ledger, user, 1_000, f"g-{user}")
    expected = {f"user:{u}": 1_000 for u in users}
    for index, (src, dst, amount) in enumerate(moves):
        transfer = Transfer(f"m{index}", f"user:{users[src]}", f"user:{users[dst]}", amount, "move", "grant", str(index))
        try:
            ledger.transfer(transfer)
        except InsufficientFunds:
            assert expected[transfer.debit] < amount
            continue
        except ProtocolError:
            assert src == dst
            continue
        expected[transfer.debit] -= amount
        expected[transfer.credit] += amount
    balances = ledger.balances()
    assert all(balances[a] == v for a, v in expected.items())
    assert sum(balances.values()) == 0 and all(v >= 0 for a, v in balances.items() if a != ISSUANCE)
    report = verify_ledger(log)
    assert report["ok"], report["problems"]
    statement = ledger.statement("user:a")
    assert (statement[-1]["balance"] if statement else 0) == balances["user:a"]


def tamper_cases(url: str) -> list:
    """Mutations of the stored log/tables, each of which verify must catch."""

    def change_entry(conn) -> None:  # noqa: ANN001
        row = conn.execute(select(log_entries).where(log_entries.c.seq == 3)).first()
        conn.execute(log_entries.update().where(log_entries.c.seq == 3)
                     .values(entry=row.entry.replace('"amount":', '"amount":1')))

    def change_entry_and_hash(conn) -> None:  # noqa: ANN001
        from iollm.mining.merkle import leaf_hash

        row = conn.execute(select(log_entries).where(log_entries.c.seq == 2)).first()
        forged = row.entry.replace('"amount":', '"amount":9')
        conn.execute(log_entries.update().where(log_entries.c.seq == 2)
                     .values(entry=forged, leaf_hash=leaf_hash(forged.encode()).hex()))

    def delete_entry(conn) -> None:  # noqa: ANN001
        conn.execute(log_entries.delete().where(log_entries.c.seq == 4))

    def reorder(conn) -> None:  # noqa: ANN001
        a = conn.execute(select(log_entries).where(log_entries.c.seq == 1)).first()
        b = conn.execute(select(log_entries).where(log_entries.c.seq == 2)).first()
        for seq, row in ((1, b), (2, a)):
            conn.execute(log_entries.update().where(log_entries.c.seq == seq)
                         .values(entry=row.entry, leaf_hash=row.leaf_hash, ref=row.ref + f"-{seq}"))

    def truncate(conn) -> None:  # noqa: ANN001
        top = conn.execute(select(log_entries.c.seq).order_by(log_entries.c.seq.desc())).first()[0]
        conn.execute(log_entries.delete().where(log_entries.c.seq == top))

    def change_amount(conn) -> None:  # noqa: ANN001
        conn.execute(transfers.update().where(transfers.c.id == "m1").values(amount=transfers.c.amount + 1))

    def change_balance(conn) -> None:  # noqa: ANN001
        conn.execute(accounts.update().where(accounts.c.id == "user:a").values(balance=accounts.c.balance + 5))

    def delete_transfer(conn) -> None:  # noqa: ANN001
        conn.execute(transfers.delete().where(transfers.c.id == "m2"))

    def forge_checkpoint(conn) -> None:  # noqa: ANN001
        conn.execute(checkpoints.update().values(signature=signing.sign(signing.generate_key(), b"x")))

    return [change_entry, change_entry_and_hash, delete_entry, reorder, truncate, change_amount, change_balance,
            delete_transfer, forge_checkpoint]


@pytest.mark.parametrize("case", range(9))
def test_every_kind_of_tampering_is_detected(database_url: str, case: int) -> None:
    key = signing.generate_key()
    ledger, log = open_ledger(database_url, key)
    for user in "ab":
        grant(ledger, user, 10_000, f"g-{user}")
    for index in range(6):
        ledger.transfer(Transfer(f"m{index}", "user:a", "user:b", 100 + index, "move", "grant", str(index)))
    log.checkpoint()
    assert verify_ledger(log)["ok"]
    mutate = tamper_cases(database_url)[case]
    with log.db.write() as conn:
        mutate(conn)
    report = verify_ledger(TamperLog(log.db, key))
    assert not report["ok"], f"{mutate.__name__} was not detected"


def test_inclusion_proofs_check_offline_with_the_node_key(tmp_path: Path) -> None:
    ledger, log = open_ledger(str(tmp_path / "db.sqlite"))
    for index in range(20):
        grant(ledger, f"u{index}", 5 + index, f"g{index}")
    proof = log.prove(7)
    assert check_proof(proof) == (True, "entry is in the signed log")
    assert json.loads(proof["entry"])["ref"] == "g7"
    forged = {**proof, "entry": proof["entry"].replace('"amount":12', '"amount":13')}
    assert check_proof(forged)[0] is False
    other_key = {**proof, "node_key": signing.public_key_id(signing.generate_key())}
    assert check_proof(other_key)[0] is False


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10**12),
    st.integers(0, 3000),
    st.integers(0, 10_000),
    st.dictionaries(st.text(min_size=1, max_size=4), st.tuples(st.integers(1, 3000), st.integers(0, 10**9)),
                    max_size=12),
)
def test_revenue_splits_always_sum_to_the_charge(charge, fee_bps, reward_bps, investors) -> None:  # noqa: ANN001
    parts = split_charge(charge, Fees(fee_bps, reward_bps), investors)
    assert sum(parts.values()) == charge
    assert all(v >= 0 for v in parts.values())
    assert all(parts.get(f"investor:{p}", 0) == 0 for p, (_, compute) in investors.items() if compute == 0)
    assert split_charge(charge, Fees(fee_bps, reward_bps), investors) == parts  # deterministic


def test_ten_thousand_way_split_is_exact() -> None:
    investors = {f"p{i}": (1, 1 + i % 97) for i in range(10_000)}
    parts = split_charge(10**9 + 7, Fees(1000, 5000), {k: (9, c) for k, (_, c) in investors.items()})
    assert sum(parts.values()) == 10**9 + 7 and len(parts) == 10_003


WRITER = """
import sys
from iollm import signing
from iollm.database import open_database
from iollm.mining.ledger import Ledger, Transfer
from iollm.mining.tables import metadata
from iollm.mining.tamperlog import TamperLog
db = open_database(sys.argv[1]); db.create(metadata)
ledger = Ledger(db, TamperLog(db, signing.generate_key()))
name, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    ledger.transfer(Transfer(f"{name}-{i}", "user:pool", f"user:{name}", 1, "move", "grant", str(i)))
"""


def test_writers_in_several_processes_and_a_killed_writer_leave_an_exact_ledger(database_url: str) -> None:
    ledger, log = open_ledger(database_url)
    grant(ledger, "pool", 100_000, "seed")
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, database_url, f"w{i}", "40"], env=env) for i in range(4)]
    victim = subprocess.Popen([sys.executable, "-c", WRITER, database_url, "victim", "100000"], env=env,
                              start_new_session=True)
    time.sleep(2.0)
    os.killpg(victim.pid, signal.SIGKILL)  # killed mid-transfer
    victim.wait()
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    fresh = TamperLog(log.db, log.key)
    report = verify_ledger(fresh)
    assert report["ok"], report["problems"]
    balances = Ledger(log.db, fresh).balances()
    assert all(balances[f"user:w{i}"] == 40 for i in range(4))
    assert balances["user:pool"] + sum(v for a, v in balances.items() if a.startswith("user:w")) \
        + balances.get("user:victim", 0) == 100_000
    with log.db.read() as conn:
        logged = conn.execute(text("SELECT COUNT(*) FROM mining_log WHERE ref LIKE 'victim-%'")).scalar_one()
    assert logged == balances.get("user:victim", 0)  # every applied transfer is logged, nothing half-applied
