"""Benchmark of the universal environment's serving path (issue #3). Prints one JSON object.

On SmolLM2 and the same prompts, in one run:
1. decode speed through the node's OpenAI API vs llama-cpp-python in-process vs ``llama_cpp.server``;
2. gateway overhead: latency of a 1-token completion through the node vs direct, p50/p95 over 200+
   requests, beside ``llama_cpp.server`` and a bare FastAPI route with no model (the HTTP floor: what
   loopback HTTP and the ASGI stack cost before any gateway work), and throughput with 8 concurrent clients (node vs ``llama_cpp.server``);
3. cold start: pull from the hub + load + first token (a fresh node pulling through from another).

``BENCH_ONLY=overhead`` (or a comma list of decode, overhead, throughput_8_clients, cold_start) runs
only those parts; ``BENCH_REQUESTS`` sets the overhead loop's length.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _harness import BenchNode, emit, free_port, scratch
from iollm import assets

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
THREADS = os.cpu_count() or 2
CTX = 4096
PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain how a bicycle works, in detail.",
    "Describe a walk through a forest in autumn.",
    "Tell me about the history of bread.",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def start_llama_server(gguf: Path, work: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    started = time.perf_counter()
    log = open(work / "llama_server.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            "smol",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(CTX),
            "--n_threads",
            str(THREADS),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    while True:
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
        if process.poll() is not None:
            raise RuntimeError("llama_cpp.server exited; see llama_server.log")
    return process, url, time.perf_counter() - started


def start_floor_server(work: Path, target: str = "app") -> tuple[subprocess.Popen, str]:
    """A floor server from bench/_floor_app.py on uvicorn, no model: ``app`` is a bare FastAPI route
    (loopback HTTP plus the ASGI stack), ``raw_app`` a bare ASGI callable (loopback HTTP and uvicorn)."""
    port = free_port()
    log = open(work / f"floor_server_{target}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"_floor_app:{target}",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).parent,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    while True:
        try:
            httpx.post(f"{url}/completions", json={}, timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
        if process.poll() is not None:
            raise RuntimeError("the floor server exited; see floor_server.log")


def chat(client: httpx.Client, url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    start = time.perf_counter()
    reply = client.post(f"{url}/chat/completions", json=body)
    reply.raise_for_status()
    return time.perf_counter() - start, reply.json()["usage"]["completion_tokens"]


def one_token(client: httpx.Client, url: str, model: str) -> float:
    start = time.perf_counter()
    reply = client.post(
        f"{url}/completions", json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
    )
    reply.raise_for_status()
    return time.perf_counter() - start


def decode_speed(llm, node: BenchNode, server_url: str) -> dict:
    token_header = {"Authorization": f"Bearer {node.token}"}
    results = {}
    with (
        httpx.Client(timeout=600, headers=token_header) as node_http,
        httpx.Client(timeout=600) as server_http,
    ):
        for name in ("direct", "node", "llama_cpp_server"):
            seconds = tokens = 0.0
            for prompt in PROMPTS:
                if name == "direct":
                    start = time.perf_counter()
                    out = llm.create_chat_completion(
                        messages=[{"role": "user", "content": prompt}], max_tokens=256, temperature=0
                    )
                    seconds += time.perf_counter() - start
                    tokens += out["usage"]["completion_tokens"]
                elif name == "node":
                    s, n = chat(node_http, f"{node.url}/v1", "local/smol", prompt, 256)
                    seconds, tokens = seconds + s, tokens + n
                else:
                    s, n = chat(server_http, server_url, "smol", prompt, 256)
                    seconds, tokens = seconds + s, tokens + n
            results[name] = {"tokens": int(tokens), "tokens_per_s": round(tokens / seconds, 1)}
    results["node_over_direct"] = round(
        results["node"]["tokens_per_s"] / results["direct"]["tokens_per_s"], 3
    )
    results["node_over_llama_cpp_server"] = round(
        results["node"]["tokens_per_s"] / results["llama_cpp_server"]["tokens_per_s"], 3
    )
    results["target_met"] = results["node_over_direct"] >= 0.95
    return results


def overhead(llm, node: BenchNode, server_url: str, floor_url: str, raw_url: str) -> dict:
    """1-token completions, interleaved: in-process (direct), through the node, through
    ``llama_cpp.server``, to a bare FastAPI route with no model (the HTTP floor) and to a bare ASGI
    callable (the raw floor). Overhead is a path's p50 minus direct's; the floors' p50s are what
    loopback HTTP, uvicorn and the client cost alone (raw) and with FastAPI on top (floor)."""
    direct, via_node, via_server, via_floor, via_raw = [], [], [], [], []
    with (
        httpx.Client(timeout=60, headers={"Authorization": f"Bearer {node.token}"}) as node_http,
        httpx.Client(timeout=60) as server_http,
    ):
        for _ in range(10):  # warm up every path
            llm.create_completion("Hello", max_tokens=1, temperature=0)
            one_token(node_http, f"{node.url}/v1", "local/smol")
            one_token(server_http, server_url, "smol")
            one_token(server_http, floor_url, "smol")
            one_token(server_http, raw_url, "smol")
        for _ in range(REQUESTS):  # interleaved so drift hits all four alike
            start = time.perf_counter()
            llm.create_completion("Hello", max_tokens=1, temperature=0)
            direct.append(time.perf_counter() - start)
            via_node.append(one_token(node_http, f"{node.url}/v1", "local/smol"))
            via_server.append(one_token(server_http, server_url, "smol"))
            via_floor.append(one_token(server_http, floor_url, "smol"))
            via_raw.append(one_token(server_http, raw_url, "smol"))
    ms = lambda xs: [x * 1000 for x in xs]  # noqa: E731
    d, n, s, f, r = ms(direct), ms(via_node), ms(via_server), ms(via_floor), ms(via_raw)
    node_over = round(pct(n, 0.5) - pct(d, 0.5), 3)
    server_over = round(pct(s, 0.5) - pct(d, 0.5), 3)
    result = {
        "requests": REQUESTS,
        "direct_ms": {"p50": pct(d, 0.5), "p95": pct(d, 0.95)},
        "node_ms": {"p50": pct(n, 0.5), "p95": pct(n, 0.95)},
        "llama_cpp_server_ms": {"p50": pct(s, 0.5), "p95": pct(s, 0.95)},
        "http_floor_ms": {"p50": pct(f, 0.5), "p95": pct(f, 0.95)},
        "raw_asgi_floor_ms": {"p50": pct(r, 0.5), "p95": pct(r, 0.95)},
        "node_overhead_ms": {"p50": node_over, "p95": round(pct(n, 0.95) - pct(d, 0.95), 3)},
        "llama_cpp_server_overhead_ms": {"p50": server_over, "p95": round(pct(s, 0.95) - pct(d, 0.95), 3)},
        "node_above_floor_ms": round(node_over - pct(f, 0.5), 3),
        "llama_cpp_server_above_floor_ms": round(server_over - pct(f, 0.5), 3),
        "node_over_llama_cpp_server_overhead": round(node_over / server_over, 3) if server_over > 0 else None,
    }
    # issue 15: p50 overhead at most 1.0 ms and at most half of llama_cpp.server's, in the same run
    result["target_met"] = node_over <= 1.0 and node_over <= 0.5 * server_over
    # a bound no Python server on uvicorn can beat here: a zero-work ASGI callable's round trip
    result["target_reachable_here"] = pct(r, 0.5) <= 1.0
    return result


def throughput(node: BenchNode, server_url: str, clients: int = 8, per_client: int = 4) -> dict:
    def run(url: str, model: str, headers: dict) -> dict:
        with httpx.Client(timeout=600, headers=headers) as http:
            start = time.perf_counter()

            def worker(i: int) -> int:
                return sum(
                    chat(http, url, model, PROMPTS[(i + j) % len(PROMPTS)], 32)[1] for j in range(per_client)
                )

            with ThreadPoolExecutor(clients) as pool:
                tokens = sum(pool.map(worker, range(clients)))
            seconds = time.perf_counter() - start
        return {
            "requests": clients * per_client,
            "tokens": tokens,
            "requests_per_s": round(clients * per_client / seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1),
        }

    ours = run(f"{node.url}/v1", "local/smol", {"Authorization": f"Bearer {node.token}"})
    theirs = run(server_url, "smol", {})
    return {
        "clients": clients,
        "node": ours,
        "llama_cpp_server": theirs,
        "node_over_llama_cpp_server": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
        "target_met": ours["tokens_per_s"] >= theirs["tokens_per_s"],
    }


def first_token(url: str, token: str, model: str) -> float:
    start = time.perf_counter()
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": True}
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                return time.perf_counter() - start
    return time.perf_counter() - start


def cold_start(origin: BenchNode, work: Path, server_start_s: float) -> dict:
    edge = BenchNode(work / "edge", "--no-seed", "--upstream", origin.url)
    try:
        seconds = first_token(edge.url, edge.token, "local/smol")
    finally:
        edge.stop()
    return {
        "pull_load_first_token_s": round(seconds, 3),
        "includes": "pull-through mirror of 98 MB over loopback + verified materialization + llama.cpp load + first token",
        "llama_cpp_server_start_to_ready_s": round(server_start_s, 3),
    }


def main() -> None:
    from llama_cpp import Llama

    gguf = assets.ensure_model("smollm2", progress=False)
    with scratch("iollm-bench-runtime-") as work:
        node = BenchNode(work / "node", "--no-seed")
        server = floor = raw = None
        try:
            node.cli_json("push", str(gguf), "local/smol")
            first_local = first_token(node.url, node.token, "local/smol")
            server, server_url, server_start = start_llama_server(gguf, work)
            floor, floor_url = start_floor_server(work)
            raw, raw_url = start_floor_server(work, "raw_app")
            llm = Llama(model_path=str(gguf), n_ctx=CTX, n_threads=THREADS, verbose=False)
            parts = {
                "decode": lambda: decode_speed(llm, node, server_url),
                "overhead": lambda: overhead(llm, node, server_url, floor_url, raw_url),
                "throughput_8_clients": lambda: throughput(node, server_url),
                "cold_start": lambda: {
                    "node_first_token_after_push_s": round(first_local, 3),
                    **cold_start(node, work, server_start),
                },
            }
            only = [p for p in os.environ.get("BENCH_ONLY", "").split(",") if p] or list(parts)
            result = {
                "benchmark": "runtime",
                "model": "SmolLM2-135M-Instruct Q4_1",
                "machine": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)},
                **{name: parts[name]() for name in only},
            }
        finally:
            for floor_server in (floor, raw):
                if floor_server is not None:
                    floor_server.terminate()
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            node.stop()
    emit(result)


if __name__ == "__main__":
    main()
