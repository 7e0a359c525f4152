"""Benchmark of the decentralized GPU layer (issue #5). Prints one JSON object.

In one run: a path-eval workload on 1 provider vs 2 providers (speedup); per-job scheduling overhead
(submission to start, p50/p95) vs a bare Dask task on the same scheduler; work redone after a provider
is killed mid fine-tune vs the checkpoint interval.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _harness import IOLLM, BenchNode, emit, scratch
from iollm import assets

TASKS = int(os.environ.get("BENCH_TASKS", "24"))
GRAPH = {
    "name": "single",
    "nodes": [
        {
            "id": "solve",
            "kind": "model",
            "model": "local/smol",
            "prompt": "{{input}} Answer with a number.",
            "params": {"max_tokens": 24},
        },
        {"id": "out", "kind": "output"},
    ],
    "edges": [{"from": "solve", "to": "out"}],
}


def iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class ProviderProcess:
    def __init__(self, node: BenchNode, home: Path, cpus: int = 1) -> None:
        self.node, self.home = node, home
        subprocess.run(
            [*IOLLM, "provider", "init", "--home", str(home), "--name", home.name],
            check=True,
            capture_output=True,
        )
        log = open(home / "join.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [*IOLLM, "provider", "join", "--cpus", str(cpus), "--home", str(home), "--json"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=node.env(IOLLM_HOME=str(home), IOLLM_TOKEN=node.token),
        )
        self.id = json.loads((home / "provider" / "provider.json").read_text())["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            providers = httpx.get(f"{node.url}/api/providers").json()["providers"]
            if any(p["id"] == self.id and p["state"] == "online" for p in providers):
                return
            time.sleep(0.2)
        raise TimeoutError("provider did not come online")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def api(node: BenchNode, method: str, path: str, **kw):
    return httpx.request(
        method, f"{node.url}{path}", headers={"Authorization": f"Bearer {node.token}"}, timeout=60, **kw
    )


def run_job(node: BenchNode, kind: str, spec: dict, timeout: float = 1800) -> tuple[dict, float]:
    started = time.perf_counter()
    job = api(node, "POST", "/api/jobs", json={"kind": kind, "spec": spec}).json()
    while time.perf_counter() - started < timeout:
        state = api(node, "GET", f"/api/jobs/{job['id']}").json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            return state, time.perf_counter() - started
        time.sleep(0.1)
    raise TimeoutError(f"job {job['id']} did not finish")


def tasks(offset: int) -> list[dict]:
    return [
        {
            "id": f"t{offset}-{i}",
            "input": f"What is {i} + {offset}?",
            "target": str(i + offset),
            "checker": "numeric",
        }
        for i in range(TASKS)
    ]


def speedup(node: BenchNode, work: Path) -> dict:
    first = ProviderProcess(node, work / "p1")
    warm, _ = run_job(
        node, "path-eval", {"graph": GRAPH, "tasks": tasks(100)[:2], "batch_size": 1}
    )  # pull + load
    one, one_s = run_job(node, "path-eval", {"graph": GRAPH, "tasks": tasks(1), "batch_size": 2})
    second = ProviderProcess(node, work / "p2")
    run_job(
        node, "path-eval", {"graph": GRAPH, "tasks": tasks(200)[:4], "batch_size": 1}
    )  # warm the second one
    two, two_s = run_job(node, "path-eval", {"graph": GRAPH, "tasks": tasks(2), "batch_size": 2})
    return {
        "tasks": TASKS,
        "units": two["units"]["total"],
        "one_provider_units": _spread(node, one["id"]),
        "two_providers_units": _spread(node, two["id"]),
        "one_provider_s": round(one_s, 2),
        "two_providers_s": round(two_s, 2),
        "speedup": round(one_s / two_s, 3),
        "providers_used": len(two["units"]["providers"]),
        "states": [warm["state"], one["state"], two["state"]],
        "target_met": one_s / two_s >= 1.7,
        "_providers": [first, second],
    }


def _spread(node: BenchNode, job_id: str) -> dict:
    """Per provider: units run, metered CPU seconds, and the span from its first start to its last end."""
    out: dict[str, dict] = {}
    for m in api(node, "GET", "/api/meters", params={"job": job_id}).json()["meters"]:
        entry = out.setdefault(m["provider"][-8:], {"units": 0, "cpu_s": 0.0, "first": None, "last": None})
        entry["units"] += 1
        entry["cpu_s"] = round(entry["cpu_s"] + m["cpu_seconds"], 2)
        start, end = iso(m["started_at"]), iso(m["ended_at"])
        entry["first"] = start if entry["first"] is None else min(entry["first"], start)
        entry["last"] = end if entry["last"] is None else max(entry["last"], end)
    for entry in out.values():
        entry["busy_span_s"] = round(entry.pop("last") - entry.pop("first"), 2)
    return out


def scheduling_overhead(node: BenchNode, repeats: int = 20) -> dict:
    """Job submission (HTTP) to the unit starting on a worker, vs submitting a bare Dask task."""
    ours = []
    for i in range(repeats):
        spec = {
            "graph": GRAPH,
            "tasks": [{"id": f"o{i}", "input": "1+1", "target": "2", "checker": "numeric"}],
            "batch_size": 1,
        }
        sent = time.time()
        job, _ = run_job(node, "path-eval", spec)
        meter = api(node, "GET", "/api/meters", params={"job": job["id"]}).json()["meters"][0]
        ours.append((iso(meter["started_at"]) - sent) * 1000)
    scheduler = api(node, "GET", "/api/cluster").json()["scheduler"]

    async def bare() -> list[float]:
        from distributed import Client

        async with Client(scheduler, asynchronous=True) as client:
            out = []
            for _ in range(repeats):
                sent = time.time()
                started = await client.submit(time.time, pure=False, resources={"CPU": 1})
                out.append((started - sent) * 1000)
            return out

    baseline = asyncio.run(bare())

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "repeats": repeats,
        "job_submit_to_start_ms": {"p50": pct(ours, 0.5), "p95": pct(ours, 0.95)},
        "bare_dask_submit_to_start_ms": {"p50": pct(baseline, 0.5), "p95": pct(baseline, 0.95)},
        "target_met": pct(ours, 0.5) < 50,
    }


def redone_work(node: BenchNode, work: Path, providers: list) -> dict:
    """Kill the provider running a fine-tune right after its first checkpoint; compare the steps done
    twice with the checkpoint interval."""
    st = assets.ensure_smollm2_safetensors(progress=False)
    subprocess.run(
        [*IOLLM, "push", str(st), "local/smol-st", "--json"], env=node.env(), check=True, capture_output=True
    )
    data = work / "ds"
    data.mkdir()
    rows = [{"text": f"Question {i}: what is {i} plus {i}? Answer: {2 * i}."} for i in range(40)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    subprocess.run(
        [*IOLLM, "push", str(data), "local/sums", "--type", "dataset", "--json"],
        env=node.env(),
        check=True,
        capture_output=True,
    )
    steps, every = 8, 2
    spec = {
        "base": "local/smol-st",
        "dataset": "local/sums",
        "steps": steps,
        "checkpoint_every": every,
        "output": "local/smol-sums",
        "seq_len": 32,
        "batch_size": 2,
    }
    job = api(node, "POST", "/api/jobs", json={"kind": "finetune", "spec": spec}).json()
    if "id" not in job:
        return {"error": job}
    killed = None
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline and killed is None:
        logs = api(node, "GET", f"/api/jobs/{job['id']}/logs").json()["logs"]
        if any("checkpoint at step" in line["line"] for line in logs):  # the first checkpoint is on the node
            running = api(node, "GET", "/api/cluster").json()["running"]
            victim = next((p for p in providers if any(job["id"] in k for k in running.get(p.id, []))), None)
            if victim is not None:
                victim.kill()
                killed = victim.id
        time.sleep(0.1)
    state, _ = run_job_wait(node, job["id"])
    result = state.get("result") or {}
    executed = result.get("steps_executed")
    redone = result.get("steps_redone")
    return {
        "steps": steps,
        "checkpoint_every": every,
        "killed_provider": killed,
        "state": state["state"],
        "steps_executed_total": executed,
        "steps_redone": redone,
        "target_met": redone is not None and redone <= every,
        "result": {k: v for k, v in result.items() if k != "losses"},
    }


def run_job_wait(node: BenchNode, job_id: str, timeout: float = 1800) -> tuple[dict, float]:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        state = api(node, "GET", f"/api/jobs/{job_id}").json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            return state, time.perf_counter() - started
        time.sleep(0.2)
    raise TimeoutError(job_id)


def main() -> None:
    with scratch("iollm-bench-compute-") as work:
        node = BenchNode(work / "node", "--no-seed", "--audit-rate", "0")
        providers = []
        try:
            subprocess.run(
                [*IOLLM, "push", str(assets.ensure_model("smollm2", progress=False)), "local/smol", "--json"],
                env=node.env(),
                check=True,
                capture_output=True,
            )
            scaling = speedup(node, work)
            providers = scaling.pop("_providers")
            result = {
                "benchmark": "compute",
                "machine": {"cpus": os.cpu_count()},
                "path_eval_speedup": scaling,
                "scheduling_overhead": scheduling_overhead(node),
                "redone_after_kill": redone_work(node, work, providers),
            }
        finally:
            for provider in providers:
                provider.kill()
            node.stop()
    emit(result)


if __name__ == "__main__":
    main()
