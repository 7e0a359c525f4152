"""The job path's throughput fixes (issue 17 item 4), each without a cluster: meter records written in
the same commit as their unit and still billed once, provider log lines written in batches off the
event loop, units ordered by their expected work, and a search round's jobs run side by side."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from iollm import signing
from iollm.compute.metering import Meters, result_digest
from iollm.compute.tables import logs, metadata, meters
from iollm.database import open_database


def signed_outcome(key, unit: str, attempt: int = 1) -> dict[str, Any]:
    meter = {
        "job": "j",
        "unit": unit,
        "attempt": attempt,
        "provider": signing.public_key_id(key),
        "worker": "tcp://x",
        "started_at": "a",
        "ended_at": "b",
        "cpu_us": 2_000_000,
        "gpu_us": 0,
        "result_digest": result_digest({"u": unit}),
        "audit": False,
    }
    return {"result": {"u": unit}, "meter": meter, "signature": signing.sign_json(key, meter)}


def test_a_meter_record_commits_with_its_unit_and_bills_each_unit_once(tmp_path: Path) -> None:
    db = open_database(tmp_path / "db.sqlite")
    db.create(metadata)
    book = Meters(db, signing.generate_key())
    key = signing.generate_key()
    provider = signing.public_key_id(key)
    row = book.check(signed_outcome(key, "g0-b0"), provider)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.write() as conn:  # the unit's own write fails: nothing is billed
        assert book.store(conn, row)
        raise Boom
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(meters)).scalar() == 0
    with db.write() as conn:
        assert book.store(conn, row)
        retried = book.check(signed_outcome(key, "g0-b0", attempt=2), provider)
        assert not book.store(conn, retried)  # a retried unit is billed once, in the same transaction
        assert book.store(conn, book.check(signed_outcome(key, "g0-b1"), provider))
    with db.read() as conn:
        billed = conn.execute(select(meters.c.unit, meters.c.cpu_seconds).order_by(meters.c.unit)).all()
    assert [tuple(r) for r in billed] == [("g0-b0", 2.0), ("g0-b1", 2.0)]


def test_provider_log_lines_are_written_in_order_in_batches_off_the_loop(tmp_path: Path) -> None:
    from iollm.compute.joblog import JobLogWriter

    db = open_database(tmp_path / "db.sqlite")
    db.create(metadata)
    writer = JobLogWriter(db)
    loop_thread: list[int] = []
    write_threads: list[int] = []
    writer.on_write = lambda n: write_threads.append(threading.get_ident())

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        for i in range(200):
            writer.add("job", f"line {i}")
        await writer.flush()

    asyncio.run(main())
    with db.read() as conn:
        lines = [r.line for r in conn.execute(select(logs.c.line).order_by(logs.c.id))]
    assert lines == [f"line {i}" for i in range(200)]
    assert 1 <= writer.batches < 200  # one commit for many lines, not one each
    assert loop_thread[0] not in write_threads  # the event loop (the scheduler's) never waits on a commit


def test_units_that_cost_more_are_started_first() -> None:
    from iollm.paths.cluster_eval import PathEval

    single = {
        "nodes": [
            {"id": "a", "kind": "model", "model": "local/m", "prompt": "{{input}}"},
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "a", "to": "out"}],
    }
    vote = {
        "nodes": [
            {"id": "v", "kind": "vote", "model": "local/m", "prompt": "{{input}}", "k": 5},
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "v", "to": "out"}],
    }
    kind = PathEval()
    tasks = [{"id": "t"}] * 2
    assert kind.cost({"graph": vote, "tasks": tasks}) > kind.cost({"graph": single, "tasks": tasks * 2})
    assert kind.cost({"graph": single, "tasks": tasks * 2}) > kind.cost({"graph": single, "tasks": tasks})


class FakeNode:
    """Answers like a node whose providers only finish a job once every job of the round is queued:
    an evaluator that waits for one job before submitting the next never gets an answer."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.specs: dict[str, dict] = {}
        self.polls = 0

    def submit_job(self, kind: str, spec: dict, key: str) -> dict:
        job_id = f"job{len(self.specs)}"
        self.specs[job_id] = spec
        return {"id": job_id, "state": "queued"}

    def get_json(self, path: str, params: dict | None = None) -> dict:
        assert params and params.get("wait")  # a long-poll, not a busy poll
        return self.job(path.rsplit("/", 1)[1])

    def job(self, job_id: str) -> dict:
        self.polls += 1
        if self.polls > 50:
            raise AssertionError("the round's jobs were not all submitted together")
        if len(self.specs) < self.expected:
            return {"id": job_id, "state": "running", "units": {"total": 1, "done": 0}}
        spec = self.specs[job_id]
        graphs = [
            {"name": g["name"], "records": [{"id": t["id"], "score": 1.0} for t in spec["tasks"]]}
            for g in spec["graphs"]
        ]
        return {"id": job_id, "state": "succeeded", "result": {"graphs": graphs}, "units": {}}


def test_a_rounds_jobs_run_side_by_side(monkeypatch) -> None:
    from iollm.paths import cluster_search
    from iollm.paths.candidate import Candidate
    from iollm.paths.cluster_search import ClusterEvaluator
    from iollm.paths.pricing import PriceBook
    from iollm.paths.task import Task

    monkeypatch.setattr(cluster_search, "POLL_SECONDS", 0.0)
    graph = {"nodes": [{"id": "out", "kind": "output"}], "edges": []}
    first, second = Candidate("a", "t", {}, {}, graph), Candidate("b", "t", {}, {}, graph)
    t1, t2 = Task("1", "q", "1", "exact"), Task("2", "q", "2", "exact")
    node = FakeNode(expected=2)
    evaluator = ClusterEvaluator(client=None, prices=PriceBook(), node=node)  # type: ignore[arg-type]
    # two task lists, so two jobs: a's on t1 and b's on t2
    asyncio.run(evaluator.run([(first, t1), (second, t2)], "search"))
    assert len(node.specs) == 2 and len(evaluator.jobs) == 2
    assert set(evaluator.results) == {("a", "1"), ("b", "2")}


def test_a_tapered_job_ends_with_single_task_units_and_keeps_every_task_once() -> None:
    from iollm.paths.cluster_eval import TAPER_UNITS, PathEval

    graph = {
        "nodes": [
            {"id": "a", "kind": "model", "model": "local/m", "prompt": "{{input}}"},
            {"id": "out", "kind": "output"},
        ],
        "edges": [{"from": "a", "to": "out"}],
    }
    tasks = [{"id": f"t{i}"} for i in range(24)]
    spec = {"graphs": [{"name": "g", "graph": graph}], "tasks": tasks, "models": {}, "seed": 0, "prices": {}}
    kind = PathEval()
    plain = kind.plan("j", {**spec, "batch_size": 4}, None)
    tapered = kind.plan("j", {**spec, "batch_size": 4, "taper": True}, None)
    assert [len(p["tasks"]) for _, p in plain] == [4] * 6  # unchanged without "taper"
    sizes = [len(p["tasks"]) for _, p in tapered]
    assert sizes == [4, 4] + [1] * (4 * TAPER_UNITS)  # the units started last are single tasks
    ids = [t["id"] for _, p in tapered for t in p["tasks"]]
    assert sorted(ids) == sorted(t["id"] for t in tasks)  # each task in exactly one unit
    keys = [k for k, _ in tapered]
    assert len(set(keys)) == len(keys) and keys[0] == "g0-b0" and keys[-1] == "g0-b5-t3"
