"""The ``finetune`` job kind: LoRA fine-tuning of a hub model on a hub dataset, on a provider's CPU.

One unit trains the whole job. Every ``checkpoint_every`` steps it pushes a checkpoint (adapter,
optimizer, LR schedule, RNG, step, losses) into the submitter's private repository
``<submitter>/<job>-checkpoints`` on the node, never on a provider. A provider that dies costs at most
one interval: Dask (or the job service, after a failed attempt) runs the unit again on another
provider, which resumes from the newest checkpoint. The data order is a pure function of
(seed, step) and the LR schedule and optimizer come back exactly, so a resumed run computes the
steps an uninterrupted one would. When the unit is done the node publishes the adapter files of the
last checkpoint (the same chunks, no copy) as a new model repository whose card names its base.

The helpers at the top (spec checking, pinning, reading hub files, pulling on a worker) are shared
with ``batch-infer``. The training data and batches are ``finetune_data``; reading a job's runs back from
its log is ``finetune_runs``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...database import utc_now_iso
from ...errors import Conflict, ProtocolError
from ...protocol import FileEntry, LocalCache, NodeClient, branch_head, commit_bytes, pull
from ...store.reader import ChunkedFile
from ..kind import register_kind
from .finetune_data import batch_indices, collate, encode_row, finetune_row_problem
from .finetune_runs import job_log_lines, runs_from_log
from .specs import (
    check_keys,
    dataset_rows,
    float_field,
    int_field,
    output_field,
    parse_rows,
    pin,
    pull_snapshot,
    repo_field,
    where_am_i,
    worker_running,
)

if TYPE_CHECKING:
    from ...hub import Identity
    from ..jobs import JobServices
    from ..units import UnitContext

KIND = "finetune"
FORMAT = "iollm-finetune/1"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
MAX_STEPS = 1_000_000
DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-4,
    "lora_r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "v_proj"],
    "batch_size": 2,
    "seq_len": 128,
    "seed": 0,
}
SPEC_KEYS = {"base", "dataset", "dataset_file", "steps", "checkpoint_every", "output", *DEFAULTS}


# -- checkpoints: safetensors for tensors, JSON for everything else (no pickle) ---------------------


def training_digest(payload: dict[str, Any]) -> str:
    """What a checkpoint must have been trained with to be resumed by this payload."""
    keys = (
        "base",
        "dataset",
        "steps",
        "learning_rate",
        "lora_r",
        "lora_alpha",
        "target_modules",
        "batch_size",
        "seq_len",
        "seed",
    )
    return hashlib.sha256(json.dumps({k: payload[k] for k in keys}, sort_keys=True).encode()).hexdigest()


def checkpoint_files(session: Session) -> dict[str, bytes]:
    """The checkpoint as file bytes, built in memory (small: the adapter and its optimizer state)."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save

    adapter = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(session.model).items()}
    config = {
        k: sorted(v) if isinstance(v, set) else v  # as peft writes it, with sets in a stable order
        for k, v in session.model.peft_config["default"].to_dict().items()
    }
    config.update(
        base_model_name_or_path=session.payload["base"]["repo"], revision=session.payload["base"]["commit"]
    )
    optimizer = session.optimizer.state_dict()
    moments = {
        f"state.{i}.{name}": t.detach().contiguous()
        for i, state in optimizer["state"].items()
        for name, t in state.items()
    }
    state = {
        **session.state,
        "optimizer": {"class": "AdamW", "param_groups": optimizer["param_groups"]},
        "lr_scheduler": session.scheduler.state_dict(),
        "saved_at": utc_now_iso(),
    }
    return {
        "adapter_model.safetensors": save(adapter, metadata={"format": "pt"}),
        "adapter_config.json": json.dumps(config, indent=2, sort_keys=True).encode(),
        "optimizer.safetensors": save(moments),
        "rng_state.safetensors": save({"torch_cpu": torch.get_rng_state()}),
        "trainer_state.json": json.dumps(state, indent=1, sort_keys=True).encode(),
    }


def load_checkpoint(folder: Path, session: Session) -> None:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load

    set_peft_model_state_dict(session.model, load((folder / "adapter_model.safetensors").read_bytes()))
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in load((folder / "optimizer.safetensors").read_bytes()).items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    saved = json.loads((folder / "trainer_state.json").read_text())
    groups = [{**g, "betas": tuple(g["betas"])} for g in saved["optimizer"]["param_groups"]]
    session.optimizer.load_state_dict({"state": state, "param_groups": groups})
    session.scheduler.load_state_dict(saved["lr_scheduler"])
    torch.set_rng_state(load((folder / "rng_state.safetensors").read_bytes())["torch_cpu"])


# -- the worker side ---------------------------------------------------------------------------------


@contextmanager
def torch_settings(threads: int) -> Iterator[None]:
    """Deterministic kernels on the provider's lent CPUs, restored afterwards (the worker is shared)."""
    import torch

    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


class Session:
    """One run of the train unit on one provider: from the newest checkpoint (or step 0) to the end."""

    def __init__(self, payload: dict[str, Any], ctx: UnitContext) -> None:
        self.payload = payload
        self.ctx = ctx
        self.run_id = secrets.token_hex(4)
        self.provider, self.worker, self.cpus = where_am_i()
        self.client = NodeClient(ctx.node_url, ctx.token)
        self.repo = payload["checkpoint_repo"]
        self.head = branch_head(self.client, "model", self.repo)
        self.state: dict[str, Any] = {}
        self.step_seconds: list[float] = []
        self.push_seconds: list[float] = []

    def log(self, line: str) -> None:
        self.ctx.log(f"run {self.run_id} {line}")

    def fresh_state(self) -> dict[str, Any]:
        p = self.payload
        return {
            "format": FORMAT,
            "job": self.ctx.job,
            "training": training_digest(p),
            "step": 0,
            "steps": p["steps"],
            "checkpoint_every": p["checkpoint_every"],
            "seed": p["seed"],
            "base": p["base"],
            "dataset": p["dataset"],
            "losses": [],
            "runs": [],
            "data_order": "sample g of the run is row shuffle(range(n), Random(f'{seed}:{g // n}'))[g % n]",
        }

    def checkpoint_folder(self) -> Path | None:
        """Pull the newest checkpoint and check it belongs to this job's training."""
        if self.head is None:
            self.state = self.fresh_state()
            return None
        folder = self.ctx.cache_dir / "finetune" / self.ctx.job / "resume" / self.head
        pull([self.client], "model", self.repo, self.head, LocalCache(self.ctx.cache_dir / "cache"), folder)
        self.state = json.loads((folder / "trainer_state.json").read_text())
        if self.state.get("format") != FORMAT or self.state.get("training") != training_digest(self.payload):
            raise RuntimeError(
                f"checkpoint {self.head[:12]} of {self.repo} was not made by this job's training"
            )
        return folder

    def build(self) -> None:
        """Base model in float32 with fresh LoRA layers (seeded), AdamW and a linear decay schedule."""
        import torch
        import transformers
        from peft import LoraConfig, get_peft_model

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        p = self.payload
        base = pull_snapshot(
            self.ctx,
            "model",
            p["base"]["repo"],
            p["base"]["commit"],
            include=lambda path: not path.endswith(".gguf"),
        )
        dataset = pull_snapshot(
            self.ctx,
            "dataset",
            p["dataset"]["repo"],
            p["dataset"]["commit"],
            include=lambda path: path == p["dataset"]["file"],
        )
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        rows = parse_rows(KIND, (dataset / p["dataset"]["file"]).read_bytes(), finetune_row_problem)
        self.encoded = [encode_row(self.tokenizer, row, p["seq_len"]) for row in rows]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        torch.manual_seed(p["seed"])
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        lora = LoraConfig(
            r=p["lora_r"],
            lora_alpha=p["lora_alpha"],
            target_modules=p["target_modules"],
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(model, lora)
        self.model.train()
        params = [t for t in self.model.parameters() if t.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=p["learning_rate"], weight_decay=0.0)
        steps = p["steps"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: max(0.0, 1.0 - s / steps)
        )

    def train_step(self, step: int) -> float:
        import torch

        p = self.payload
        batch = collate(
            self.encoded, batch_indices(p["seed"], step, p["batch_size"], len(self.encoded)), self.pad_id
        )
        started = time.perf_counter()
        loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([t for t in self.model.parameters() if t.requires_grad], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_seconds.append(time.perf_counter() - started)
        return float(loss.item())

    def push_checkpoint(self, step: int) -> None:
        """Push the state after ``step`` steps on top of the commit this run last saw, atomically: a
        run that another run has overtaken (a provider thought dead) stops instead of forking history."""
        started = time.perf_counter()
        card = {
            "relation": "checkpoint",
            "base_model": self.payload["base"]["repo"],
            "job": self.ctx.job,
            "step": step,
        }
        try:
            commit, sent = commit_bytes(
                self.client,
                self.repo,
                checkpoint_files(self),
                self.head,
                message=f"step {step}",
                card=card,
                private=True,
            )
        except Conflict as exc:
            raise RuntimeError(
                f"checkpoints of {self.repo} moved under run {self.run_id}: another run took over"
            ) from exc
        seconds = time.perf_counter() - started
        self.push_seconds.append(seconds)
        self.head = commit
        self.log(f"checkpoint at step {step} pushed in {seconds:.2f} s ({commit[:12]}, {sent} bytes sent)")

    def train(self) -> None:
        p = self.payload
        for step in range(self.state["step"], p["steps"]):
            if not worker_running():
                raise RuntimeError(
                    f"run {self.run_id}: this worker left the pool; stopping before step {step + 1}"
                )
            loss = self.train_step(step)
            self.state["step"] = step + 1
            self.state["losses"].append(loss)
            self.state["runs"][-1]["reached"] = step + 1
            self.log(f"step {step + 1}/{p['steps']} loss {loss:.4f} ({self.step_seconds[-1]:.2f} s)")
            if (step + 1) % p["checkpoint_every"] == 0 or step + 1 == p["steps"]:
                self.push_checkpoint(step + 1)

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        folder = self.checkpoint_folder()
        resumed_from = int(self.state["step"])
        self.log(
            f"started on {self.provider} (attempt {self.ctx.attempt}, worker {self.worker or '-'}, "
            f"{self.cpus} CPU): resuming from step {resumed_from}"
            + (f" (checkpoint {self.head[:12]})" if self.head else " (no checkpoint yet)")
        )
        load_seconds = 0.0
        if resumed_from < self.payload["steps"]:
            self.build()
            if folder is not None:
                load_checkpoint(folder, self)
            load_seconds = time.perf_counter() - started
            self.state["runs"].append(
                {
                    "run": self.run_id,
                    "attempt": self.ctx.attempt,
                    "provider": self.provider,
                    "worker": self.worker,
                    "resumed_from": resumed_from,
                    "reached": resumed_from,
                    "started_at": utc_now_iso(),
                }
            )
            self.train()
        else:
            self.log("the newest checkpoint is the last step: nothing to train")
        return self.result(resumed_from, load_seconds)

    def result(self, resumed_from: int, load_seconds: float) -> dict[str, Any]:
        p = self.payload
        mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
        return {
            "steps": p["steps"],
            "checkpoint_every": p["checkpoint_every"],
            "resumed_from": resumed_from,
            "executed": p["steps"] - resumed_from,
            "final_commit": self.head,
            "checkpoint_repo": self.repo,
            "losses": self.state["losses"],
            "run": self.run_id,
            "provider": self.provider,
            "step_seconds": mean(self.step_seconds),
            "checkpoint_push_seconds": mean(self.push_seconds),
            "load_seconds": round(load_seconds, 3),
        }


class Finetune:
    name = KIND
    checkpointed = True

    def validate(self, spec: dict[str, Any], services: JobServices, caller: Identity) -> dict[str, Any]:
        """Check everything the node can check before any provider spends a second: types, ranges,
        that base and dataset exist and have the right files, that the output is writable."""
        check_keys(KIND, spec, SPEC_KEYS)
        steps = int_field(KIND, spec, "steps", None, 1, MAX_STEPS)
        every = int_field(KIND, spec, "checkpoint_every", None, 1, MAX_STEPS)
        if every > steps:
            raise ProtocolError(f"{KIND}: 'checkpoint_every' ({every}) cannot exceed 'steps' ({steps})")
        targets = spec.get("target_modules", DEFAULTS["target_modules"])
        if (
            not isinstance(targets, list)
            or not targets
            or not all(isinstance(t, str) and re.fullmatch(r"[A-Za-z0-9_.]+", t) for t in targets)
        ):
            raise ProtocolError(f"{KIND}: 'target_modules' must be a non-empty list of module names")
        output = output_field(KIND, spec, caller)
        base, dataset = self._base(spec, services, caller, targets), self._dataset(spec, services, caller)
        if output == base["repo"]:
            raise ProtocolError(f"{KIND}: 'output' must be a new repository, not the base model {output}")
        return {
            "base": base,
            "dataset": dataset,
            "steps": steps,
            "checkpoint_every": every,
            "output": output,
            "learning_rate": float_field(KIND, spec, "learning_rate", DEFAULTS["learning_rate"], 1e-8, 1.0),
            "lora_r": int_field(KIND, spec, "lora_r", DEFAULTS["lora_r"], 1, 256),
            "lora_alpha": int_field(KIND, spec, "lora_alpha", DEFAULTS["lora_alpha"], 1, 4096),
            "target_modules": sorted(set(targets)),
            "batch_size": int_field(KIND, spec, "batch_size", DEFAULTS["batch_size"], 1, 64),
            "seq_len": int_field(KIND, spec, "seq_len", DEFAULTS["seq_len"], 8, 4096),
            "seed": int_field(KIND, spec, "seed", DEFAULTS["seed"], 0, 2**32 - 1),
            "submitter": caller.require_user(),
        }

    def _base(
        self, spec: dict[str, Any], services: JobServices, caller: Identity, targets: list[str]
    ) -> dict:
        repo_id, revision = repo_field(KIND, spec, "base")
        commit, manifest = pin(KIND, services, caller, "model", repo_id, revision)
        paths = {f.path: f for f in manifest.files}
        shards = [f for p, f in paths.items() if p.endswith(".safetensors")]
        if "config.json" not in paths or not shards:
            raise ProtocolError(
                f"{KIND}: base {repo_id} needs config.json and *.safetensors weights "
                "(a Hugging Face format model); GGUF models cannot be fine-tuned here"
            )
        names = {
            part
            for shard in shards
            for name in self._tensor_names(services, shard)
            for part in name.split(".")
        }
        missing = [t for t in targets if t not in names]
        if missing:
            raise ProtocolError(f"{KIND}: base {repo_id} has no module named {', '.join(missing)} to adapt")
        return {"repo": repo_id, "commit": commit}

    @staticmethod
    def _tensor_names(services: JobServices, shard: FileEntry) -> list[str]:
        """Tensor names from a safetensors header (8-byte length, then JSON), read from the store."""
        reader = ChunkedFile(services.hub.store, [(bytes.fromhex(d), n) for d, n in shard.chunks])
        length = int.from_bytes(reader.read(0, 8), "little")
        if length <= 0 or length > min(shard.size - 8, 100_000_000):
            raise ProtocolError(f"{KIND}: {shard.path} is not a safetensors file")
        try:
            header = json.loads(reader.read(8, length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"{KIND}: {shard.path} has an unreadable safetensors header") from exc
        return [k for k in header if k != "__metadata__"]

    def _dataset(self, spec: dict[str, Any], services: JobServices, caller: Identity) -> dict[str, Any]:
        repo_id, revision = repo_field(KIND, spec, "dataset")
        commit, manifest = pin(KIND, services, caller, "dataset", repo_id, revision)
        entry, rows = dataset_rows(
            KIND, services, manifest, repo_id, spec.get("dataset_file"), finetune_row_problem
        )
        return {"repo": repo_id, "commit": commit, "file": entry.path, "rows": len(rows)}

    def plan(
        self, job_id: str, spec: dict[str, Any], services: JobServices
    ) -> list[tuple[str, dict[str, Any]]]:
        return [("train", {**spec, "checkpoint_repo": f"{spec['submitter']}/{job_id}-checkpoints"})]

    def resources(self, payload: dict[str, Any]) -> dict[str, int]:
        return {"CPU": 1}  # schedulable on any provider; training then uses all the CPUs it lent

    def run(self, payload: dict[str, Any], ctx: UnitContext) -> dict[str, Any]:
        session = Session(payload, ctx)
        try:
            with torch_settings(session.cpus):
                return session.run()
        except Exception as exc:
            with suppress(Exception):  # the worker may be closing: the error itself must get out
                session.log(f"failed at step {session.state.get('step', 0)}: {exc.__class__.__name__}: {exc}")
            raise
        finally:
            session.client.close()
            shutil.rmtree(ctx.cache_dir / "finetune" / ctx.job, ignore_errors=True)  # links into the cache

    def audit_view(self, result: dict[str, Any]) -> str:
        """An audit re-run resumes from the last checkpoint, so it must name the same final commit and
        losses; timings and run ids differ."""
        view = [result["steps"], result["final_commit"], result["losses"]]
        return hashlib.sha256(json.dumps(view).encode()).hexdigest()

    def finish(self, job: dict[str, Any], results: dict[str, Any], services: JobServices) -> dict[str, Any]:
        """Publish the last checkpoint's adapter (same chunks) as the submitter's new model repository."""
        result, spec = results["train"], job["spec"]
        manifest = services.hub.manifest(result["final_commit"])
        files = [f for f in manifest.files if f.path in ADAPTER_FILES]
        base_card = services.hub.card(spec["base"]["commit"])
        card = {
            "base_model": spec["base"]["repo"],
            "base_commit": spec["base"]["commit"],
            "relation": "adapter",
            "job": job["id"],
            "license": (base_card.get("declared") or {}).get("license") or base_card.get("license"),
            "dataset": spec["dataset"]["repo"],
            "dataset_commit": spec["dataset"]["commit"],
            "description": f"LoRA adapter (r={spec['lora_r']}, alpha={spec['lora_alpha']}, "
            f"{'/'.join(spec['target_modules'])}) trained {spec['steps']} steps by job {job['id']}",
        }
        identity = services.accounts.identity_for(job["submitter"])
        published, _ = services.hub.commit(
            identity,
            "model",
            spec["output"],
            files,
            card={k: v for k, v in card.items() if v is not None},
            message=f"LoRA adapter from job {job['id']}",
        )
        runs = runs_from_log(job_log_lines(services, job["id"]), result)
        executed = sum(r["executed"] for r in runs)
        return {
            "output": spec["output"],
            "commit": published.commit_id,
            **result,
            "runs": runs,
            "steps_executed": executed,
            "steps_redone": executed - (result["steps"] - runs[0]["resumed_from"]),
        }


register_kind(Finetune())
