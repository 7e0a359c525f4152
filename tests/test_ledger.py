"""The double-entry ledger, its tamper-evident log and revenue splits, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, event, select, text

from iollm import signing
from iollm.database import open_database
from iollm.mining import ledger as ledger_module
from iollm.mining.billing import Fees, split_charge
from iollm.mining.ledger import ISSUANCE, InsufficientFunds, Ledger, Transfer
from iollm.mining.tables import accounts, checkpoints, holds, log_entries, metadata, transfers
from iollm.mining.tamperlog import TamperLog, check_proof, entry_bytes
from iollm.mining.verify import verify_ledger
from iollm.money import MAX_MICRO
from iollm.protocol import Conflict, ProtocolError


def open_ledger(url: str, key: Ed25519PrivateKey | None = None) -> tuple[Ledger, TamperLog]:
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
        ledger.transfer(
            Transfer("b1", "user:bob", "user:carol", 100, "x", "grant", "b"),
            Transfer("b2", "user:alice", "user:carol", 10_000, "x", "grant", "b"),
        )
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
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 500)), min_size=1, max_size=40)
)
def test_random_transfers_keep_every_invariant(tmp_path_factory, moves) -> None:
    ledger, log = open_ledger(str(tmp_path_factory.mktemp("ledger") / "db.sqlite"))
    users = ["a", "b", "c", "d"]
    for user in users:
        grant(ledger, user, 1_000, f"g-{user}")
    expected = {f"user:{u}": 1_000 for u in users}
    for index, (src, dst, amount) in enumerate(moves):
        transfer = Transfer(
            f"m{index}", f"user:{users[src]}", f"user:{users[dst]}", amount, "move", "grant", str(index)
        )
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

    def change_entry(conn: Connection) -> None:
        row = conn.execute(select(log_entries).where(log_entries.c.seq == 3)).first()
        conn.execute(
            log_entries.update()
            .where(log_entries.c.seq == 3)
            .values(entry=row.entry.replace('"amount":', '"amount":1'))
        )

    def change_entry_and_hash(conn: Connection) -> None:
        from iollm.mining.merkle import leaf_hash

        row = conn.execute(select(log_entries).where(log_entries.c.seq == 2)).first()
        forged = row.entry.replace('"amount":', '"amount":9')
        conn.execute(
            log_entries.update()
            .where(log_entries.c.seq == 2)
            .values(entry=forged, leaf_hash=leaf_hash(forged.encode()).hex())
        )

    def delete_entry(conn: Connection) -> None:
        conn.execute(log_entries.delete().where(log_entries.c.seq == 4))

    def reorder(conn: Connection) -> None:
        a = conn.execute(select(log_entries).where(log_entries.c.seq == 1)).first()
        b = conn.execute(select(log_entries).where(log_entries.c.seq == 2)).first()
        for seq, row in ((1, b), (2, a)):
            conn.execute(
                log_entries.update()
                .where(log_entries.c.seq == seq)
                .values(entry=row.entry, leaf_hash=row.leaf_hash, ref=row.ref + f"-{seq}")
            )

    def truncate(conn: Connection) -> None:
        top = conn.execute(select(log_entries.c.seq).order_by(log_entries.c.seq.desc())).first()[0]
        conn.execute(log_entries.delete().where(log_entries.c.seq == top))

    def change_amount(conn: Connection) -> None:
        conn.execute(transfers.update().where(transfers.c.id == "m1").values(amount=transfers.c.amount + 1))

    def change_balance(conn: Connection) -> None:
        conn.execute(
            accounts.update().where(accounts.c.id == "user:a").values(balance=accounts.c.balance + 5)
        )

    def delete_transfer(conn: Connection) -> None:
        conn.execute(transfers.delete().where(transfers.c.id == "m2"))

    def forge_checkpoint(conn: Connection) -> None:
        conn.execute(checkpoints.update().values(signature=signing.sign(signing.generate_key(), b"x")))

    return [
        change_entry,
        change_entry_and_hash,
        delete_entry,
        reorder,
        truncate,
        change_amount,
        change_balance,
        delete_transfer,
        forge_checkpoint,
    ]


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
    st.dictionaries(
        st.text(min_size=1, max_size=4), st.tuples(st.integers(1, 3000), st.integers(0, 10**9)), max_size=12
    ),
)
def test_revenue_splits_always_sum_to_the_charge(charge, fee_bps, reward_bps, investors) -> None:
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
ledger = Ledger(db, TamperLog(db, signing.load_private_key(sys.argv[4])))  # the node's key, as its workers'
name, count = sys.argv[2], int(sys.argv[3])
for i in range(count):
    ledger.transfer(Transfer(f"{name}-{i}", "user:pool", f"user:{name}", 1, "move", "grant", str(i)))
"""


def test_writers_in_several_processes_and_a_killed_writer_leave_an_exact_ledger(
    database_url: str, tmp_path: Path
) -> None:
    ledger, log = open_ledger(database_url)
    key = signing.save_private_key(log.key, tmp_path / "node.key")
    # Every writer signs with the node's key: a writer that reached a checkpoint (every 1,000 entries) with
    # a key of its own made the verifier refuse it, which a fast machine does within the 2 s below.
    grant(ledger, "pool", 100_000, "seed")
    env = dict(os.environ)
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, database_url, f"w{i}", "40", str(key)], env=env)
        for i in range(4)
    ]
    victim = subprocess.Popen(
        [sys.executable, "-c", WRITER, database_url, "victim", "100000", str(key)],
        env=env,
        start_new_session=True,
    )
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
    assert (
        balances["user:pool"]
        + sum(v for a, v in balances.items() if a.startswith("user:w"))
        + balances.get("user:victim", 0)
        == 100_000
    )
    with log.db.read() as conn:
        logged = conn.execute(text("SELECT COUNT(*) FROM mining_log WHERE ref LIKE 'victim-%'")).scalar_one()
    assert logged == balances.get("user:victim", 0)  # every applied transfer is logged, nothing half-applied


# -- the bulk path and group commit -------------------------------------------------------------------


def move(ident: str, debit: str, credit: str, amount: int) -> Transfer:
    return Transfer(ident, f"user:{debit}", f"user:{credit}", amount, "move", "grant", ident)


def stored_accounts(ledger: Ledger) -> set[str]:
    with ledger.db.read() as conn:
        return set(conn.execute(select(accounts.c.id)).scalars())


def test_a_batch_applies_in_order_and_fails_as_a_whole(database_url: str) -> None:
    ledger, log = open_ledger(database_url)
    grant(ledger, "alice", 1_000, "g")
    # later transfers may spend what earlier ones in the same batch credited; a repeated id is a no-op
    applied = ledger.transfer(
        move("a1", "alice", "bob", 300), move("a1", "alice", "bob", 300), move("a2", "bob", "carol", 300)
    )
    assert [row["id"] for row in applied] == ["a1", "a2"]
    assert ledger.balances() == {ISSUANCE: -1_000, "user:alice": 700, "user:bob": 0, "user:carol": 300}
    before, accounts_before = ledger.balances(), stored_accounts(ledger)
    failing = [
        [move("b1", "alice", "dave", 10), move("b2", "dave", "erin", 11)],  # overdraws a new account
        [move("b3", "alice", "dave", 10), move("b3", "alice", "dave", 12)],  # one id, two contents
        [move("b4", "alice", "dave", 10), move("a2", "bob", "carol", 1)],  # reuses a stored id
        [move("b5", "alice", "dave", 10), move("b6", "alice", "alice", 1)],  # malformed
    ]
    for batch, error in zip(failing, (InsufficientFunds, Conflict, Conflict, ProtocolError), strict=True):
        with pytest.raises(error):
            ledger.transfer(*batch)
    assert ledger.balances() == before and stored_accounts(ledger) == accounts_before  # nothing half-applied
    with ledger.db.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM ledger_transfers")).scalar_one() == 3
    assert verify_ledger(log)["ok"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), min_size=7, max_size=7), st.integers(-(2**70), 2**70))
def test_the_fast_canonical_json_is_exactly_the_generic_one(texts: list[str], amount: int) -> None:
    ident, debit, credit, code, ref_type, ref_id, memo = texts
    transfer = Transfer(ident, debit, credit, amount, code, ref_type, ref_id, memo)
    assert transfer.canonical() == (
        transfer.digest(),
        entry_bytes("transfer", ident, transfer.content()).decode(),
    )
    odd = Transfer(ident, debit, credit, amount, code, ref_type, 7, memo)  # type: ignore[arg-type]
    assert odd.canonical() == (odd.digest(), entry_bytes("transfer", ident, odd.content()).decode())


def test_balances_cannot_overflow(tmp_path: Path) -> None:
    ledger, log = open_ledger(str(tmp_path / "db.sqlite"))
    grant(ledger, "alice", MAX_MICRO, "g1")
    with pytest.raises(ProtocolError, match="would exceed"):
        grant(ledger, "alice", 1, "g2")
    with pytest.raises(ProtocolError, match="would exceed"):
        grant(ledger, "bob", 1, "g3")  # the issuance account would go below -MAX_MICRO
    assert ledger.balances() == {ISSUANCE: -MAX_MICRO, "user:alice": MAX_MICRO}
    assert verify_ledger(log)["ok"]


def test_a_large_batch_takes_a_handful_of_statements(database_url: str) -> None:
    ledger, log = open_ledger(database_url)
    grant(ledger, "whale", 10**9, "g")
    statements: list[str] = []
    event.listen(ledger.db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    batch = [move(f"s{i}", "whale", f"p{i}", 1 + i) for i in range(2_000)]
    assert len(ledger.transfer(*batch)) == 2_000
    assert len(statements) < 40, statements  # not several per transfer
    assert ledger.balance("user:p1999") == 2_000
    assert ledger.balance("user:whale") == 10**9 - sum(range(1, 2_001))
    report = verify_ledger(log)
    assert report["ok"], report["problems"]
    assert report["transfers"] == 2_001


def hold_next_commit(ledger: Ledger) -> tuple[threading.Event, threading.Event]:
    """Make the ledger's next transaction wait, once inside, until ``release`` is set."""
    inside, release = threading.Event(), threading.Event()
    real_lock = ledger.lock

    def held_lock(conn: Connection) -> None:
        real_lock(conn)
        if not inside.is_set():
            inside.set()
            release.wait(30)

    ledger.lock = held_lock  # type: ignore[method-assign]
    return inside, release


def caller(ledger: Ledger, outcomes: dict[str, object]) -> Callable[..., None]:
    """A thread target that records what ``ledger.transfer`` returned or raised under ``name``."""

    def call(name: str, *batch: Transfer, extra: Callable[[Connection], None] | None = None) -> None:
        try:
            outcomes[name] = ledger.transfer(*batch, extra=extra)
        except BaseException as exc:
            outcomes[name] = exc

    return call


def queue_behind(ledger: Ledger, call: Callable[..., None], *args: Any, **kwargs: Any) -> threading.Thread:
    """Start a caller and wait until it is queued (so callers queue in a known order)."""
    queued = len(ledger._queue)
    thread = threading.Thread(target=call, args=args, kwargs=kwargs)
    thread.start()
    while len(ledger._queue) <= queued:
        time.sleep(0.005)
    return thread


def test_callers_queued_during_a_commit_share_the_next_one_and_fail_alone(database_url: str) -> None:
    ledger, log = open_ledger(database_url)
    grant(ledger, "alice", 1_000, "g")
    inside, release = hold_next_commit(ledger)  # the others queue behind the first transaction
    outcomes: dict[str, object] = {}
    call = caller(ledger, outcomes)

    def note(conn: Connection) -> None:
        conn.execute(
            holds.insert().values(id="noted", account="user:erin", amount=0, state="x", created_at="x")
        )

    def fail(conn: Connection) -> None:
        note(conn)
        raise ValueError("extra failed")

    commits = ledger.commits
    threads = [threading.Thread(target=call, args=("first", move("f", "alice", "bob", 100)))]
    threads[0].start()
    assert inside.wait(30)
    queued = [
        ("ok", (move("t1", "alice", "carol", 50),), None),
        ("overdraw", (move("t2", "alice", "dave", 10), move("t3", "bob", "dave", 10_000)), None),
        ("repeat", (move("t1", "alice", "carol", 50),), None),
        ("conflict", (move("t1", "alice", "carol", 51),), None),
        ("extra_fails", (move("t4", "alice", "erin", 5),), fail),
        ("extra_ok", (move("t5", "alice", "erin", 7),), note),
        ("after", (move("t6", "alice", "frank", 1), move("t7", "erin", "frank", 7)), None),
    ]
    threads += [queue_behind(ledger, call, name, *batch, extra=extra) for name, batch, extra in queued]
    release.set()
    for thread in threads:
        thread.join(30)
    assert ledger.commits - commits == 2  # the first transaction, then one for all seven queued callers
    assert [row["id"] for row in outcomes["ok"]] == ["t1"] and outcomes["repeat"] == []
    assert isinstance(outcomes["overdraw"], InsufficientFunds)
    assert isinstance(outcomes["conflict"], Conflict)
    assert isinstance(outcomes["extra_fails"], ValueError)
    assert [row["id"] for row in outcomes["extra_ok"]] == ["t5"]
    assert [row["id"] for row in outcomes["after"]] == ["t6", "t7"]
    assert ledger.balances() == {
        ISSUANCE: -1_000,
        "user:alice": 842,
        "user:bob": 100,
        "user:carol": 50,
        "user:erin": 0,
        "user:frank": 8,
    }
    with ledger.db.read() as conn:
        assert conn.execute(select(holds.c.id)).scalars().all() == ["noted"]  # only the extra that succeeded
    report = verify_ledger(log)
    assert report["ok"], report["problems"]
    assert report["entries"] == report["transfers"] == 6


class Interrupted(BaseException):
    """Stands for a KeyboardInterrupt in a waiting caller."""


def test_a_caller_that_stops_waiting_passes_on_the_lead(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, log = open_ledger(database_url)
    grant(ledger, "alice", 1_000, "g")
    real_job = ledger_module._Job

    class WokenThenInterrupted(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            super().wait(timeout)
            raise Interrupted

    def make_job(batch: tuple[Transfer, ...], extra: object) -> object:
        job = real_job(batch, extra)
        if batch and batch[0].id == "quits":
            job.wake = WokenThenInterrupted()
        return job

    monkeypatch.setattr(ledger_module, "_Job", make_job)
    inside, release = hold_next_commit(ledger)
    outcomes: dict[str, object] = {}
    call = caller(ledger, outcomes)
    threads = [threading.Thread(target=call, args=("first", move("f", "alice", "bob", 1)))]
    threads[0].start()
    assert inside.wait(30)
    threads.append(queue_behind(ledger, call, "quits", move("quits", "alice", "bob", 2)))
    threads.append(queue_behind(ledger, call, "stays", move("stays", "alice", "bob", 4)))
    release.set()  # the lead goes to "quits", which stops waiting: "stays" must still be committed
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert isinstance(outcomes["quits"], Interrupted)
    assert [row["id"] for row in outcomes["stays"]] == ["stays"]
    assert ledger.balance("user:bob") == 5
    grant(ledger, "bob", 1, "after")  # and the ledger is not stuck
    assert verify_ledger(log)["ok"]


def test_many_threads_transferring_at_once_keep_the_ledger_exact(database_url: str) -> None:
    ledger, log = open_ledger(database_url)
    users = [f"u{i}" for i in range(6)]
    for user in users:
        grant(ledger, user, 300, f"g-{user}")
    acknowledged: list[Transfer] = []

    def worker(k: int) -> None:
        for i in range(40):
            transfer = move(
                f"w{k}-{i}", users[(k + i) % 6], users[(k + 2 * i + 1) % 6], 1 + (k * 31 + i * 17) % 90
            )
            try:
                if ledger.transfer(transfer):
                    acknowledged.append(transfer)
            except (InsufficientFunds, ProtocolError):
                continue

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    expected = {f"user:{u}": 300 for u in users}
    for transfer in acknowledged:
        expected[transfer.debit] -= transfer.amount
        expected[transfer.credit] += transfer.amount
    balances = ledger.balances()
    assert all(balances[a] == v >= 0 for a, v in expected.items())
    assert sum(balances.values()) == 0
    with ledger.db.read() as conn:
        stored = set(conn.execute(select(transfers.c.id).where(transfers.c.id.like("w%"))).scalars())
    assert stored == {t.id for t in acknowledged}  # every acknowledged transfer is committed, only those
    report = verify_ledger(TamperLog(log.db, log.key))
    assert report["ok"], report["problems"]


def test_writing_the_ledger_from_inside_its_own_transaction_is_refused(tmp_path: Path) -> None:
    ledger, _ = open_ledger(str(tmp_path / "db.sqlite"))
    grant(ledger, "alice", 10, "g")
    with pytest.raises(RuntimeError, match="inside its own transaction"):
        ledger.transfer(move("x", "alice", "bob", 1), extra=lambda conn: grant(ledger, "bob", 1, "nested"))
    assert ledger.balances() == {ISSUANCE: -10, "user:alice": 10}
    grant(ledger, "bob", 1, "later")  # and the ledger still works


def bulk_tamper_cases() -> list:
    """Mutations of a log written by large batches; each must be caught, and named."""

    def swap_amounts(conn: Connection) -> str:  # the sum of balances stays the same
        conn.execute(transfers.update().where(transfers.c.id == "k10").values(amount=12))
        conn.execute(transfers.update().where(transfers.c.id == "k11").values(amount=11))
        return "transfer k10 differs from its log entry"

    def delete_middle_entry(conn: Connection) -> str:
        conn.execute(log_entries.delete().where(log_entries.c.seq == 700))
        return "log entries 700..700 are missing"

    def change_middle_entry(conn: Connection) -> str:
        conn.execute(
            log_entries.update().where(log_entries.c.seq == 900).values(entry=log_entries.c.entry + " ")
        )
        return "log entry 900 was changed"

    def drop_a_transfer(conn: Connection) -> str:
        conn.execute(transfers.delete().where(transfers.c.id == "k1500"))
        return "transfer k1500 is in the log but missing from the table"

    def add_a_transfer(conn: Connection) -> str:
        conn.execute(
            transfers.insert().values(
                id="forged",
                debit="user:payer",
                credit="user:k1",
                amount=1,
                code="move",
                ref_type="grant",
                ref_id="x",
                memo="",
                digest="0" * 64,
                created_at="x",
            )
        )
        return "transfer forged is stored but not in the log"

    return [swap_amounts, delete_middle_entry, change_middle_entry, drop_a_transfer, add_a_transfer]


@pytest.mark.parametrize("case", range(5))
def test_tampering_with_bulk_written_entries_is_detected(database_url: str, case: int) -> None:
    key = signing.generate_key()
    ledger, log = open_ledger(database_url, key)
    grant(ledger, "payer", 10**6, "g")
    ledger.transfer(*[move(f"k{i}", "payer", f"k{i % 40}", 1 + i % 5) for i in range(1_000)])
    ledger.transfer(*[move(f"k{i}", "payer", f"k{i % 40}", 1 + i % 5) for i in range(1_000, 2_000)])
    log.checkpoint()
    assert verify_ledger(log)["ok"]
    mutate = bulk_tamper_cases()[case]
    with log.db.write() as conn:
        expected = mutate(conn)
    report = verify_ledger(TamperLog(log.db, key))
    assert not report["ok"]
    assert any(expected in problem for problem in report["problems"]), report["problems"]
