"""The decentralized GPU layer with real parts: a node's Dask scheduler, providers as separate worker
processes on 127.0.0.1, signed registrations and meter records, jobs that survive provider loss."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from iollm import signing
from iollm.compute import benchmark
from nodes import Node, Provider

GRAPH = {
    "name": "single",
    "nodes": [
        {
            "id": "solve",
            "kind": "model",
            "model": "local/smol",
            "prompt": "{{input}} Answer with a number.",
            "params": {"max_tokens": 12},
        },
        {"id": "out", "kind": "output"},
    ],
    "edges": [{"from": "solve", "to": "out"}],
}
TASKS = [
    {"id": f"t{i}", "input": f"What is {i} + {i}?", "target": str(2 * i), "checker": "numeric"}
    for i in range(1, 9)
]


def wait_for(predicate, timeout: float = 240.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not met in time")


def api(node: Node, method: str, path: str, **kw):
    return httpx.request(
        method, f"{node.url}{path}", headers={"Authorization": f"Bearer {node.token}"}, timeout=60, **kw
    )


def submit(node: Node, spec: dict, key: str | None = None) -> dict:
    reply = api(node, "POST", "/api/jobs", json={"kind": "path-eval", "spec": spec, "idempotency_key": key})
    assert reply.status_code == 200, reply.text
    return reply.json()


def finished(node: Node, job_id: str):
    job = api(node, "GET", f"/api/jobs/{job_id}").json()
    return job if job["state"] in ("succeeded", "failed", "cancelled") else None


@pytest.fixture(scope="module")
def pool(node_factory, smollm2_gguf: Path, tmp_path_factory):
    node = node_factory("--no-seed", "--audit-rate", "0", name="pool")
    node.cli_json("push", str(smollm2_gguf), "local/smol")
    base = tmp_path_factory.mktemp("providers")
    providers = [Provider(node, base / name, name).start() for name in ("alpha", "beta")]
    yield node, providers, base
    for provider in providers:
        provider.kill()


def test_provider_identity_is_private(tmp_path: Path) -> None:
    from iollm.compute import init_identity, load_identity
    from iollm.protocol import Conflict

    identity = init_identity(tmp_path, "lab")
    key = tmp_path / "provider" / "provider.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert identity.id.startswith("ed25519:") and load_identity(tmp_path).id == identity.id
    with pytest.raises(Conflict):
        init_identity(tmp_path, "again")


def test_providers_join_with_benchmark_and_capacity(pool) -> None:
    node, providers, _ = pool
    listed = node.cli_json("providers")["providers"]
    ours = {p["id"]: p for p in listed}
    for provider in providers:
        entry = ours[provider.id]
        assert entry["state"] == "online" and entry["cpus"] == 1 and entry["benchmark_gflops"] > 0
        assert entry["owner"] == "local" and entry["worker"].startswith("tcp://127.0.0.1:")


def test_bad_registrations_are_refused(pool, tmp_path: Path) -> None:
    node, _, _ = pool
    key = signing.generate_key()
    provider_id = signing.public_key_id(key)

    def attempt(cpus: int = 1, gpus: int = 0, sign_with=key, product=None, nonce=None):
        challenge = api(node, "POST", "/api/providers/challenge", json={}).json()
        payload = {
            "provider": provider_id,
            "name": "mallory",
            "cpus": cpus,
            "gpus": gpus,
            "memory": 0,
            "nonce": nonce or challenge["nonce"],
            "time": int(time.time()),
        }
        answer = product if product is not None else benchmark.solve(challenge["seed"], challenge["size"])
        return api(
            node,
            "POST",
            "/api/providers",
            json={"payload": payload, "signature": signing.sign_json(sign_with, payload), "product": answer},
        )

    forged = attempt(sign_with=signing.generate_key())
    assert forged.status_code == 400 and "signature" in forged.json()["error"]["message"]
    unsigned = api(
        node, "POST", "/api/providers", json={"payload": {"provider": provider_id}, "signature": "x"}
    )
    assert unsigned.status_code == 400
    wrong = attempt(product=benchmark.solve(1, benchmark.MATRIX_SIZE))
    assert wrong.status_code == 400 and "Freivalds" in wrong.json()["error"]["message"]
    boast = attempt(cpus=4096)
    assert boast.status_code == 400 and "benchmark measured" in boast.json()["error"]["message"]
    fake_gpu = attempt(gpus=8)
    assert fake_gpu.status_code == 400 and "GPU" in fake_gpu.json()["error"]["message"]
    replay = attempt(nonce="0" * 32)
    assert replay.status_code == 400 and "challenge" in replay.json()["error"]["message"]
    assert provider_id not in [p["id"] for p in node.cli_json("providers")["providers"]]


def test_a_worker_without_the_provider_key_is_turned_away(pool, tmp_path: Path) -> None:
    node, providers, _ = pool
    scheduler = api(node, "GET", "/api/cluster").json()["scheduler"]
    code = (
        "import asyncio\nfrom distributed import Worker\n"
        "async def main():\n"
        f"    w = await Worker({scheduler!r}, name={providers[0].id!r}, nthreads=1, dashboard=False)\n"
        "    await asyncio.wait_for(w.finished(), 60)\n"
        "asyncio.run(main())\n"
    )
    impostor = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        impostor.wait(timeout=90)  # closed by the node: it cannot sign the nonce
    finally:
        impostor.kill()
    assert wait_for(providers[0].online, 30)  # the real provider is unaffected


def test_path_eval_job_spreads_over_providers_and_meters_each_unit_once(pool) -> None:
    node, providers, _ = pool
    job = submit(node, {"graph": GRAPH, "tasks": TASKS, "batch_size": 2}, key="spread")
    again = submit(node, {"graph": GRAPH, "tasks": TASKS, "batch_size": 2}, key="spread")
    assert again["id"] == job["id"]
    conflict = api(
        node,
        "POST",
        "/api/jobs",
        json={"kind": "path-eval", "idempotency_key": "spread", "spec": {"graph": GRAPH, "tasks": TASKS[:2]}},
    )
    assert conflict.status_code == 409
    done = wait_for(lambda: finished(node, job["id"]))
    assert done["state"] == "succeeded", done["error"]
    assert done["units"]["total"] == 4 and done["units"]["done"] == 4
    assert set(done["units"]["providers"]) == {p.id for p in providers}
    result = done["result"]["graphs"][0]
    assert result["tasks"] == len(TASKS) and 0 <= result["score"] <= 1
    meters = api(node, "GET", "/api/meters", params={"job": job["id"]}).json()["meters"]
    assert sorted(m["unit"] for m in meters) == ["g0-b0", "g0-b1", "g0-b2", "g0-b3"]
    cluster = api(node, "GET", "/api/cluster").json()
    for meter in meters:
        payload = json.loads(meter["payload"])
        assert signing.verify_json(meter["provider"], payload, meter["provider_signature"])
        assert signing.verify_json(
            cluster["node_key"],
            {"meter": payload, "provider_signature": meter["provider_signature"]},
            meter["node_signature"],
        )
        assert meter["cpu_seconds"] > 0 and not meter["disputed"]
    shown = node.cli_json("provider", "show", providers[0].id)
    assert shown["jobs_run"] >= 1 and shown["cpu_seconds"] > 0


def test_bad_job_specs_are_clear_errors(pool) -> None:
    node, _, _ = pool
    for kind, spec, words in (
        ("nope", {}, "unknown job kind"),
        ("path-eval", {"tasks": TASKS}, "graphs"),
        ("path-eval", {"graph": {**GRAPH, "nodes": GRAPH["nodes"][:1]}, "tasks": TASKS}, "bad graph"),
        (
            "path-eval",
            {"graph": json.loads(json.dumps(GRAPH).replace("local/smol", "local/absent")), "tasks": TASKS},
            "does not exist",
        ),
        ("path-eval", "not an object", "JSON object"),
    ):
        reply = api(node, "POST", "/api/jobs", json={"kind": kind, "spec": spec})
        assert reply.status_code == 400 and words in reply.json()["error"]["message"], reply.text


def test_path_search_on_cluster_runs_as_jobs_that_the_submission_names(pool, tmp_path: Path) -> None:
    node, providers, _ = pool
    suite = tmp_path / "tiny.jsonl"
    suite.write_text("".join(json.dumps(t) + "\n" for t in TASKS[:4]))
    args = (
        "path",
        "search",
        "--suite",
        str(suite),
        "--models",
        "local/smol",
        "--on-cluster",
        "--budget",
        "14",
    )
    args += ("--max-tokens", "6", "--report-dir", str(tmp_path / "report"), "--no-cache")
    result = node.cli_json(*args)
    assert result["jobs"] and result["calls_made"] > 0 and result["heldout"]["n"] == 2
    assert result["evaluations_used"] <= 14 < result["evaluations_exhaustive"]
    ran_on: set[str] = set()
    for job_id in result["jobs"]:
        job = api(node, "GET", f"/api/jobs/{job_id}").json()
        assert job["kind"] == "path-eval" and job["state"] == "succeeded"
        ran_on.update(job["units"]["providers"])
    assert ran_on <= {p.id for p in providers} and ran_on
    holder = node.cli_json("leaderboard", "tiny")["holder"]
    assert holder["graph_hash"] == result["best"]["hash"] and sorted(holder["jobs"]) == sorted(
        set(result["jobs"])
    )
    again = node.cli_json(*args)  # the same search again: the same jobs, nothing evaluated twice
    assert sorted(again["jobs"]) == sorted(result["jobs"]) and again["best"]["name"] == result["best"]["name"]


def test_a_job_can_be_waited_for_without_polling(pool) -> None:
    """``GET /api/jobs/ID?wait=S`` answers when the job ends (a long-poll), so a search learns at once
    that its round is done instead of polling the node several times a second."""
    node, _, _ = pool
    job = submit(node, {"graph": GRAPH, "tasks": TASKS[:2], "batch_size": 1})
    done = api(node, "GET", f"/api/jobs/{job['id']}", params={"wait": 30}).json()
    for _ in range(20):  # the node caps a wait at 30 s; a slow machine may need a few
        if done["state"] in ("succeeded", "failed", "cancelled"):
            break
        done = api(node, "GET", f"/api/jobs/{job['id']}", params={"wait": 30}).json()
    assert done["state"] == "succeeded" and done["units"]["done"] == 2
    assert api(node, "GET", f"/api/jobs/{job['id']}", params={"wait": 30}).json()["state"] == "succeeded"


def test_provider_workers_do_not_run_dasks_profiler(pool) -> None:
    """Dask's profiler samples every thread every 10 ms, taking the GIL from the model loop."""
    from distributed import Client

    node, providers, _ = pool
    scheduler = api(node, "GET", "/api/cluster").json()["scheduler"]
    with Client(scheduler, timeout=30) as client:
        callbacks = client.run(lambda dask_worker: sorted(dask_worker.periodic_callbacks))
    assert len(callbacks) >= len(providers)
    assert all("profile" not in names for names in callbacks.values())


def test_a_provider_killed_mid_job_costs_only_its_unit(pool) -> None:
    node, providers, base = pool
    many = [{**task, "id": f"{task['id']}-{n}"} for n in range(3) for task in TASKS]
    job = submit(node, {"graph": GRAPH, "tasks": many, "batch_size": 2})
    victim = providers[0]
    wait_for(
        lambda: any(
            line["line"].startswith("[g0-")
            for line in api(node, "GET", f"/api/jobs/{job['id']}/logs").json()["logs"]
        ),
        120,
        0.1,
    )
    victim.kill()
    done = wait_for(lambda: finished(node, job["id"]), 600)
    assert done["state"] == "succeeded", done["error"]
    meters = api(node, "GET", "/api/meters", params={"job": job["id"]}).json()["meters"]
    units = [m["unit"] for m in meters]
    assert len(units) == len(set(units)) == done["units"]["total"]  # every unit billed exactly once
    providers[0] = Provider(node, base / "alpha", "alpha").start()  # same identity reconnects
    assert providers[0].online()


def test_node_restart_requeues_running_jobs(node_factory, smollm2_gguf: Path, tmp_path: Path) -> None:
    node = node_factory("--no-seed", name="restart")
    node.cli_json("push", str(smollm2_gguf), "local/smol")
    provider = Provider(node, tmp_path / "gamma", "gamma").start()
    try:
        job = submit(node, {"graph": GRAPH, "tasks": TASKS, "batch_size": 1})
        wait_for(lambda: api(node, "GET", f"/api/jobs/{job['id']}").json()["units"]["done"] >= 1, 240, 0.2)
        node.kill()
        provider.kill()
        node.start()
        state = api(node, "GET", f"/api/jobs/{job['id']}").json()
        assert state["state"] == "queued"  # nothing runs it: not "running" without a live worker
        assert any(
            "requeued" in line["line"]
            for line in api(node, "GET", f"/api/jobs/{job['id']}/logs").json()["logs"]
        )
        provider = Provider(node, tmp_path / "gamma", "gamma").start()
        done = wait_for(lambda: finished(node, job["id"]), 600)
        assert done["state"] == "succeeded"
        assert done["units"]["done"] == len(TASKS)
    finally:
        provider.kill()


CHEAT = """
from iollm.paths import cluster_eval
_honest = cluster_eval.PathEval.run
def _cheat(self, payload, ctx):
    result = _honest(self, payload, ctx)
    for task in result["tasks"]:
        task["answer"], task["score"] = "made up", 1.0
    return result
cluster_eval.PathEval.run = _cheat
"""


def test_audits_catch_a_provider_whose_results_do_not_reproduce(
    node_factory, smollm2_gguf: Path, tmp_path: Path
) -> None:
    node = node_factory("--no-seed", "--audit-rate", "1.0", name="audited")
    node.cli_json("push", str(smollm2_gguf), "local/smol")
    honest = [Provider(node, tmp_path / n, n).start() for n in ("h1", "h2")]
    liar = Provider(node, tmp_path / "liar", "liar", prelude=CHEAT).start()
    try:
        job = submit(node, {"graph": GRAPH, "tasks": TASKS[:6], "batch_size": 1})
        done = wait_for(lambda: finished(node, job["id"]), 900)
        assert done["state"] == "succeeded", done["error"]
        listed = {p["id"]: p for p in node.cli_json("providers")["providers"]}
        meters = api(node, "GET", "/api/meters", params={"job": job["id"]}).json()["meters"]
        assert any(m["provider"] == liar.id and not m["audit"] for m in meters)  # the liar computed units
        answers = [t["answer"] for t in done["result"]["graphs"][0]["records"]]
        assert "made up" not in answers  # its results were replaced by the reproduced ones
        audited = node.cli_json("provider", "show", liar.id)["audits"]
        assert any(a["provider"] == liar.id and not a["matched"] for a in audited)
        assert listed[liar.id]["standing"] < 1.0 and listed[liar.id]["disputed_cpu_seconds"] > 0
        for provider in honest:
            assert listed[provider.id]["disputed_cpu_seconds"] == 0 and listed[provider.id]["standing"] == 1.0
    finally:
        for provider in [*honest, liar]:
            provider.kill()


def test_meter_records_with_forged_signatures_are_refused(tmp_path: Path) -> None:
    from iollm.compute.metering import Meters, result_digest
    from iollm.compute.tables import metadata
    from iollm.database import open_database
    from iollm.protocol import ProtocolError

    db = open_database(tmp_path / "db.sqlite")
    db.create(metadata)
    meters = Meters(db, signing.generate_key())
    key = signing.generate_key()
    provider = signing.public_key_id(key)
    meter = {
        "job": "j",
        "unit": "u",
        "attempt": 1,
        "provider": provider,
        "worker": "tcp://x",
        "started_at": "a",
        "ended_at": "b",
        "cpu_us": 5_000_000,
        "gpu_us": 0,
        "result_digest": result_digest({"x": 1}),
        "audit": False,
    }
    outcome = {"result": {"x": 1}, "meter": meter, "signature": signing.sign_json(key, meter)}
    assert meters.record(outcome, provider)["cpu_seconds"] == 5.0
    assert (
        meters.record(
            {
                **outcome,
                "meter": {**meter, "attempt": 2},
                "signature": signing.sign_json(key, {**meter, "attempt": 2}),
            },
            provider,
        )
        is None
    )  # once
    forged = {**outcome, "signature": signing.sign_json(signing.generate_key(), meter)}
    with pytest.raises(ProtocolError, match="signature"):
        meters.record(forged, provider)
    with pytest.raises(ProtocolError, match="worker belongs"):
        meters.record(outcome, signing.public_key_id(signing.generate_key()))
    with pytest.raises(ProtocolError, match="does not match the result"):
        meters.record({**outcome, "result": {"x": 2}}, provider)
    assert os.path.exists(tmp_path / "db.sqlite")
