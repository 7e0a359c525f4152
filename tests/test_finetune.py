"""The ``finetune`` job kind with real parts: a node (its Dask scheduler in-process), providers as
separate ``iollm provider join`` processes on 127.0.0.1, LoRA on the safetensors SmolLM2-135M.

Also holds the small provider-pool helper that ``test_batch_infer`` uses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from iollm.protocol import LocalCache, NotFound, pull
from nodes import Node

N_STEPS, EVERY = 6, 2
TERMINAL = ("succeeded", "failed", "cancelled")


# -- a pool of real providers --------------------------------------------------------------------------


@dataclass
class ProviderProcess:
    """One ``iollm provider join`` subprocess with its own home, joined with the node's admin token."""

    node: Node
    home: Path
    name: str
    cpus: int = 1
    process: subprocess.Popen | None = None

    @property
    def id(self) -> str:
        return json.loads((self.home / "provider" / "provider.json").read_text())["id"]

    def start(self) -> ProviderProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        if not (self.home / "provider" / "provider.json").exists():
            self.node.cli("provider", "init", "--name", self.name, "--home", str(self.home))
        log = open(self.home / "provider.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "iollm",
                "provider",
                "join",
                "--cpus",
                str(self.cpus),
                "--json",
                "--home",
                str(self.home),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.node.env(IOLLM_HOME=str(self.home), IOLLM_TOKEN=self.node.token),
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=60)


def online_ids(node: Node) -> set[str]:
    return {p["id"] for p in node.cli_json("providers")["providers"] if p["state"] == "online"}


def start_providers(node: Node, base: Path, names: list[str], cpus: int = 1) -> list[ProviderProcess]:
    """Start providers and wait until ``iollm providers --json`` shows every one of them online."""
    started = [ProviderProcess(node, base / name, name, cpus).start() for name in names]
    wait_online(node, started)
    return started


def wait_online(node: Node, providers: list[ProviderProcess], timeout: float = 180.0) -> None:
    def ready() -> bool:
        for provider in providers:
            if not provider.alive():
                raise RuntimeError(f"provider {provider.name} exited; see {provider.home / 'provider.log'}")
        return {p.id for p in providers} <= online_ids(node)

    wait_for(ready, timeout)


def stop_providers(providers: list[ProviderProcess]) -> None:
    for provider in providers:
        provider.kill(signal.SIGINT)
    for provider in providers:
        provider.kill()


# -- talking to the node -------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float = 300.0, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not met in time")


def api(node: Node, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or node.token}"}
    return httpx.request(method, f"{node.url}{path}", headers=headers, timeout=120, **kw)


def submit(
    node: Node, kind: str, spec: Any, token: str | None = None, key: str | None = None
) -> httpx.Response:
    return api(node, "POST", "/api/jobs", token, json={"kind": kind, "spec": spec, "idempotency_key": key})


def job(node: Node, job_id: str) -> dict[str, Any]:
    return api(node, "GET", f"/api/jobs/{job_id}").json()


def job_log(node: Node, job_id: str) -> list[str]:
    return [x["line"] for x in api(node, "GET", f"/api/jobs/{job_id}/logs").json()["logs"]]


def wait_job(node: Node, job_id: str, timeout: float = 420.0) -> dict[str, Any]:
    """The finished job; fails with the job's log if it did not succeed."""
    done = wait_for(
        lambda: (lambda j: j if j["state"] in TERMINAL else None)(job(node, job_id)), timeout, 0.5
    )
    assert done["state"] == "succeeded", (done.get("error"), job_log(node, job_id))
    return done


def pull_repo(node: Node, repo_type: str, repo_id: str, revision: str, dest: Path) -> Path:
    with node.client() as client:
        pull([client], repo_type, repo_id, revision, LocalCache(dest.parent / "cache"), dest)
    return dest


# -- fixtures ------------------------------------------------------------------------------------------


def write_dataset(folder: Path) -> Path:
    """20 rows: both row shapes a finetune takes."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"What is {i} plus {i}?", "completion": f" {2 * i}."} for i in range(14)]
    rows += [{"text": f"The capital of country number {i} is city number {i}."} for i in range(6)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def pool(
    node_factory, smollm2_safetensors: Path, tmp_path_factory
) -> Iterator[tuple[Node, list[ProviderProcess]]]:
    node = node_factory("--no-seed", "--audit-rate", "0", name="finetune")
    node.cli_json("push", str(smollm2_safetensors), "local/smol-hf", "--license", "apache-2.0")
    data = write_dataset(tmp_path_factory.mktemp("data") / "sums")
    node.cli_json("push", str(data), "local/sums", "--type", "dataset")
    providers = start_providers(node, tmp_path_factory.mktemp("providers"), ["alpha", "beta"], cpus=2)
    yield node, providers
    stop_providers(providers)


def spec(output: str, **overrides: Any) -> dict[str, Any]:
    return {
        "base": "local/smol-hf",
        "dataset": "local/sums",
        "steps": N_STEPS,
        "checkpoint_every": EVERY,
        "output": output,
        "seq_len": 32,
        "batch_size": 2,
        "seed": 0,
        **overrides,
    }


def checkpoint_steps(node: Node, job_id: str) -> list[int]:
    """Steps of the checkpoints pushed so far, oldest first."""
    try:
        with node.client() as client:
            commits = client.log("model", f"local/{job_id}-checkpoints")
    except NotFound:
        return []
    return sorted(int(c["message"].split()[-1]) for c in commits)


@pytest.fixture(scope="module")
def uninterrupted(pool) -> dict[str, Any]:
    """One tiny run, undisturbed: the reference the interrupted runs must reproduce."""
    node, _ = pool
    reply = submit(node, "finetune", spec("local/sums-lora"), key="tiny")
    assert reply.status_code == 200, reply.text
    return wait_job(node, reply.json()["id"])


# -- tests ---------------------------------------------------------------------------------------------


def test_bad_specs_are_refused_before_any_work(pool) -> None:
    node, _ = pool
    bad = node.home.parent / "bad-data"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"text": "fine"}\n{"question": "no text"}\n')
    node.cli_json("push", str(bad), "local/bad-rows", "--type", "dataset")
    (node.home.parent / "no-weights").mkdir()
    (node.home.parent / "no-weights" / "config.json").write_text("{}")
    node.cli_json("push", str(node.home.parent / "no-weights"), "local/no-weights")
    cases = {
        "does not exist": spec("local/x", base="local/nope"),
        "dataset 'local/missing'": spec("local/x", dataset="local/missing"),
        "revision": spec("local/x", base="local/smol-hf@v9"),
        "cannot exceed": spec("local/x", checkpoint_every=N_STEPS + 1),
        "'steps' must be an integer": spec("local/x", steps="6"),
        "must be an integer, not 6.5": spec("local/x", steps=6.5),
        "must be an integer, not true": spec("local/x", steps=True),
        "between 1 and": spec("local/x", steps=0),
        "'learning_rate' must be a number": spec("local/x", learning_rate="fast"),
        "target_modules": spec("local/x", target_modules="q_proj"),
        "no module named nope_proj": spec("local/x", target_modules=["q_proj", "nope_proj"]),
        "unknown spec key": spec("local/x", stepz=3),
        "line 2": spec("local/x", dataset="local/bad-rows"),
        "needs config.json and *.safetensors": spec("local/x", base="local/no-weights"),
        "not the base model": spec("local/smol-hf"),
        "'checkpoint_every' is required": {
            k: v for k, v in spec("local/x").items() if k != "checkpoint_every"
        },
        "a job spec is a JSON object": ["not", "an", "object"],
    }
    before = len(api(node, "GET", "/api/jobs").json()["jobs"])
    for needle, body in cases.items():
        reply = submit(node, "finetune", body)
        assert reply.status_code == 400, (needle, reply.text)
        assert needle in reply.json()["error"]["message"], (needle, reply.json())
    bob = node.cli_json("user", "create", "bob")["token"]
    forbidden = submit(node, "finetune", spec("local/stolen"), token=bob)
    assert forbidden.status_code == 403 and "namespace 'local'" in forbidden.json()["error"]["message"]
    assert len(api(node, "GET", "/api/jobs").json()["jobs"]) == before  # nothing was queued


@pytest.mark.slow
def test_tiny_finetune_publishes_an_adapter_whose_card_names_base_and_job(
    pool, uninterrupted: dict[str, Any], smollm2_safetensors: Path, tmp_path: Path
) -> None:
    node, _ = pool
    result, job_id = uninterrupted["result"], uninterrupted["id"]
    assert result["steps"] == N_STEPS and result["checkpoint_every"] == EVERY
    assert result["resumed_from"] == 0 and result["executed"] == N_STEPS and result["steps_redone"] == 0
    assert len(result["losses"]) == N_STEPS and all(0 < x < 20 for x in result["losses"])
    assert result["step_seconds"] > 0 and result["checkpoint_push_seconds"] > 0
    assert checkpoint_steps(node, job_id) == [2, 4, 6]
    assert any("resuming from step 0" in line for line in job_log(node, job_id))

    info = node.cli_json("show", "local/sums-lora")
    declared = info["card"]["declared"]
    base_commit = node.cli_json("show", "local/smol-hf")["commit"]
    assert declared["base_model"] == "local/smol-hf" and declared["base_commit"] == base_commit
    assert declared["relation"] == "adapter" and declared["job"] == job_id
    assert info["card"]["license"] == "apache-2.0"
    assert info["lineage"][0] == {"repo": "local/smol-hf", "relation": "adapter", "exists": True}
    assert info["commit"] == result["commit"]
    published = {f["path"]: f["sha256"] for f in info["files"]}
    with node.client() as client:
        checkpoint = client.manifest("model", result["checkpoint_repo"], result["final_commit"])
    assert published == {f.path: f.sha256 for f in checkpoint.files if f.path in published}  # same bytes
    assert set(published) == {"adapter_model.safetensors", "adapter_config.json"}
    assert {f.path for f in checkpoint.files} >= {
        "optimizer.safetensors",
        "rng_state.safetensors",
        "trainer_state.json",
    }

    adapter = pull_repo(node, "model", "local/sums-lora", "main", tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "local/smol-hf" and config["revision"] == base_commit
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights = load_file(adapter / "adapter_model.safetensors")
    assert len(weights) == 2 * 2 * 30 and all("lora_A" in k or "lora_B" in k for k in weights)
    assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)  # B starts at 0: it trained
    base = AutoModelForCausalLM.from_pretrained(smollm2_safetensors, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter)
    loaded = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert torch.equal(loaded, weights["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"])


@pytest.mark.slow
def test_a_killed_provider_costs_at_most_one_checkpoint_interval(pool, uninterrupted: dict[str, Any]) -> None:
    node, providers = pool
    reply = submit(node, "finetune", spec("local/sums-lora-killed"), key="killed")
    assert reply.status_code == 200, reply.text
    job_id = reply.json()["id"]
    wait_for(lambda: checkpoint_steps(node, job_id), 300, 0.1)  # the first checkpoint has landed
    runner = next(line for line in reversed(job_log(node, job_id)) if " started on " in line).split()[5]
    victim = next(p for p in providers if p.id == runner)
    victim.kill()  # SIGKILL: no goodbye, the unit dies mid-step

    result = wait_job(node, job_id)["result"]
    runs = result["runs"]
    print(json.dumps(runs), *job_log(node, job_id), sep="\n")
    assert runs[0]["provider"] == victim.id and runs[-1]["provider"] != victim.id
    assert EVERY <= result["resumed_from"] < N_STEPS
    assert runs[-1]["resumed_from"] == result["resumed_from"] == runs[0]["checkpointed"]
    assert result["steps_executed"] <= N_STEPS + EVERY and result["steps_redone"] <= EVERY
    assert sum(r["executed"] for r in runs) == result["steps_executed"]
    assert result["steps_redone"] == runs[0]["reached"] - runs[0]["checkpointed"]
    # data order, optimizer, schedule and RNG came back exactly: the same training as without the kill
    assert result["losses"] == pytest.approx(uninterrupted["result"]["losses"], rel=1e-5)
    with node.client() as client:
        ours = client.manifest("model", result["checkpoint_repo"], result["final_commit"])
        theirs = client.manifest(
            "model", uninterrupted["result"]["checkpoint_repo"], uninterrupted["result"]["final_commit"]
        )
    adapter_sha = {m.file("adapter_model.safetensors").sha256 for m in (ours, theirs)}  # type: ignore[union-attr]
    print(
        json.dumps(
            {
                "resumed_from": result["resumed_from"],
                "redone": result["steps_redone"],
                "bit_identical_adapter": len(adapter_sha) == 1,
                "runs": runs,
            }
        )
    )
    victim.start()
    wait_online(node, [victim])


@pytest.mark.slow
def test_node_restart_requeues_a_running_finetune_which_resumes(pool) -> None:
    node, providers = pool
    reply = submit(node, "finetune", spec("local/sums-lora-restart"), key="restart")
    assert reply.status_code == 200, reply.text
    job_id = reply.json()["id"]
    wait_for(lambda: checkpoint_steps(node, job_id), 300, 0.1)
    assert job(node, job_id)["state"] == "running"

    node.kill(signal.SIGKILL)  # the node and its in-process Dask scheduler die
    for provider in providers:  # a worker that lost its scheduler leaves; do not wait for it forever
        try:
            provider.process.wait(timeout=30)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            provider.kill()
    node.start()
    after = job(node, job_id)
    print("state right after restart:", after["state"])
    assert after["state"] in ("queued", "running") and after["units"]["done"] == 0
    assert not online_ids(node)  # no live worker anywhere: nothing can be executing the job
    assert "node restarted: job requeued; finished units are kept" in job_log(node, job_id)

    for provider in providers:
        provider.start()
    wait_online(node, providers)
    result = wait_job(node, job_id)["result"]
    assert result["resumed_from"] >= EVERY  # from the checkpoint on the node, not from scratch
    assert result["steps_executed"] <= N_STEPS + EVERY
    assert node.cli_json("show", "local/sums-lora-restart")["card"]["declared"]["job"] == job_id


def test_data_order_is_a_pure_function_of_seed_and_step() -> None:
    from iollm.compute.kinds.finetune import batch_indices

    n, batch = 7, 3
    first = [batch_indices(5, step, batch, n) for step in range(10)]
    assert first == [batch_indices(5, step, batch, n) for step in range(10)]
    flat = [i for b in first for i in b]
    assert sorted(flat[:n]) == list(range(n))  # every row once per epoch
    assert first != [batch_indices(6, step, batch, n) for step in range(10)]
    digest = hashlib.sha256(json.dumps(first).encode()).hexdigest()
    assert (
        digest
        == hashlib.sha256(json.dumps([batch_indices(5, s, batch, n) for s in range(10)]).encode()).hexdigest()
    )
