"""Benchmark of the decentralized GPU layer (issues #5, #17). Prints one JSON object.

In one run: a path-eval workload on 1, 2 and 3 providers (a scaling curve), each point with its bound
measured in the same phase: as many bare processes running the same model calls through the same
backend (``LlamaCppBackend``), no node, no Dask; runs alternate so machine load hits both alike. Every
provider lends 1 CPU and every bare process runs 1 thread, so k providers are compared with k bare
processes. A second, same-machine comparison: one provider lending every core (one engine, that many
threads) against one bare process with that many threads. Then per-job scheduling overhead
(submission to start, p50/p95) vs a bare Dask task on the same scheduler; work redone after a provider
is killed mid fine-tune vs the checkpoint interval.

BENCH_TASKS (24), BENCH_REPEATS (2), BENCH_MAX_PROVIDERS (3), BENCH_PARTS (curve,wide,overhead,redone).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _harness import IOLLM, BenchNode, emit, scratch
from iollm import assets

MAX_TOKENS = 24
TASKS = int(os.environ.get("BENCH_TASKS", "24"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))
MAX_PROVIDERS = int(os.environ.get("BENCH_MAX_PROVIDERS", "3"))
PARTS = set(os.environ.get("BENCH_PARTS", "curve,wide,overhead,redone").split(","))
BATCH = 2
GRAPH = {
    "name": "single",
    "nodes": [
        {
            "id": "solve",
            "kind": "model",
            "model": "local/smol",
            "prompt": "{{input}} Answer with a number.",
            "params": {"max_tokens": MAX_TOKENS},
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
        # as `path search --on-cluster` waits: a long-poll (a node without one answers at once: poll)
        asked = time.perf_counter()
        state = api(node, "GET", f"/api/jobs/{job['id']}", params={"wait": 5}).json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            return state, time.perf_counter() - started
        if time.perf_counter() - asked < 0.1:
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


def _bare_worker(path: str, prompts: list[str], threads: int, start, done) -> None:
    """One bare process: load the model, wait for the others, run its share of the calls."""
    import threading

    from iollm.runtime.backends import ChatMessage, Counts, GenerationParams
    from iollm.runtime.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(Path(path), n_ctx=2048, n_threads=threads)  # as a provider loads it
    start.wait()
    for prompt in prompts:
        params = GenerationParams(temperature=0.0, max_tokens=MAX_TOKENS, seed=0)  # what the executor sends
        chat = [ChatMessage("user", prompt)]
        "".join(p.text for p in backend.chat(chat, params, Counts(), threading.Event()))
    done.put(os.getpid())


def bare(model: Path, offset: int, processes: int, threads: int) -> float:
    """Seconds for ``processes`` bare processes to run the job's calls (split as evenly), loads excluded."""
    import multiprocessing

    mp = multiprocessing.get_context("spawn")
    prompts = [GRAPH["nodes"][0]["prompt"].replace("{{input}}", t["input"]) for t in tasks(offset)]
    start, done = mp.Barrier(processes + 1), mp.Queue()
    procs = [
        mp.Process(target=_bare_worker, args=(str(model), prompts[i::processes], threads, start, done))
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    start.wait(timeout=600)
    began = time.perf_counter()
    for _ in procs:
        done.get(timeout=1800)
    seconds = time.perf_counter() - began
    for proc in procs:
        proc.join()
    return seconds


def warm(node: BenchNode, providers: list[ProviderProcess]) -> None:
    """Until every provider has run a unit (pulled and loaded the model): nothing of that is timed."""
    for attempt in range(10):
        job, _ = run_job(
            node,
            "path-eval",
            {"graph": GRAPH, "tasks": tasks(900 + attempt)[: 2 * len(providers)], "batch_size": 1},
        )
        ran = {
            m["provider"] for m in api(node, "GET", "/api/meters", params={"job": job["id"]}).json()["meters"]
        }
        if ran >= {p.id for p in providers}:
            return
    raise RuntimeError("a provider never ran a warm-up unit")


def _phase(node: BenchNode, providers: list, model: Path, offset: int, processes: int, threads: int) -> dict:
    """REPEATS alternations of (the job on the cluster, the same calls in bare processes)."""
    cluster_s, bare_s, spreads, states = [], [], [], []
    for r in range(REPEATS):
        job, seconds = run_job(
            node,
            "path-eval",
            {"graph": GRAPH, "tasks": tasks(offset + r), "batch_size": BATCH, "taper": True},
        )
        cluster_s.append(round(seconds, 2))
        states.append(job["state"])
        spreads.append(_spread(node, job["id"]))
        bare_s.append(round(bare(model, offset + r, processes, threads), 2))
    cluster, bound = statistics.median(cluster_s), statistics.median(bare_s)
    return {
        "cluster_s": cluster_s,
        "bare_s": bare_s,
        "cluster_tasks_per_s": round(TASKS / cluster, 3),
        "bare_tasks_per_s": round(TASKS / bound, 3),
        "cluster_vs_bare": round(bound / cluster, 3),  # 1.0: the job path costs nothing
        "states": states,
        "last_spread": spreads[-1],
    }


def curve(node: BenchNode, work: Path, model: Path) -> tuple[dict, list]:
    """k = 1..MAX_PROVIDERS providers of 1 CPU; k bare 1-thread processes in the same phase."""
    providers: list[ProviderProcess] = []
    points = {}
    for k in range(1, MAX_PROVIDERS + 1):
        providers.append(ProviderProcess(node, work / f"p{k}"))
        warm(node, providers)
        points[str(k)] = _phase(node, providers, model, 1000 * k, k, 1)
    one = points["1"]
    for point in points.values():
        point["cluster_speedup"] = round(point["cluster_tasks_per_s"] / one["cluster_tasks_per_s"], 3)
        point["bare_speedup"] = round(point["bare_tasks_per_s"] / one["bare_tasks_per_s"], 3)
    two = points.get("2")
    return {
        "tasks": TASKS,
        "batch_size": BATCH,
        "repeats": REPEATS,
        "cpus_per_provider": 1,
        "points": points,
        "target_met": two is not None and two["cluster_speedup"] >= 1.8,
    }, providers


def wide(node: BenchNode, work: Path, model: Path, providers: list) -> dict:
    """One provider lending every core (one engine with that many threads) vs as many bare threads."""
    cpus = os.cpu_count() or 1
    for provider in providers:
        provider.kill()
    solo = ProviderProcess(node, work / "wide", cpus=cpus)
    try:
        warm(node, [solo])
        return {"cpus": cpus, **_phase(node, [solo], model, 5000, 1, cpus)}
    finally:
        solo.kill()


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
            model = assets.ensure_model("smollm2", progress=False)
            result = {"benchmark": "compute", "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}}
            if "curve" in PARTS:
                result["path_eval_curve"], providers = curve(node, work, model)
            if "wide" in PARTS:
                result["same_machine"] = wide(node, work, model, providers)
                providers = []
            if "overhead" in PARTS or "redone" in PARTS:
                while len(providers) < 2:
                    providers.append(ProviderProcess(node, work / f"q{len(providers)}"))
            if "overhead" in PARTS:
                result["scheduling_overhead"] = scheduling_overhead(node)
            if "redone" in PARTS:
                result["redone_after_kill"] = redone_work(node, work, providers)
            result["machine"]["load_after"] = os.getloadavg()
        finally:
            for provider in providers:
                provider.kill()
            node.stop()
    emit(result)


if __name__ == "__main__":
    main()
