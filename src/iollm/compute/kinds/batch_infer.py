"""The ``batch-infer`` job kind: run a GGUF model from the hub over every row of a hub dataset on the
providers' own machines, and store the outputs as a dataset repository.

Rows are split into shards of ``shard_size``; each shard is a unit that pulls the dataset and the
model at their pinned commits (verified, cached on the worker) and runs llama.cpp locally. A unit's
result is persisted as soon as it arrives, so a lost provider costs at most its shard. The node then
writes ``outputs.jsonl`` (row id, output, token counts, in row order) into the output repository as
the submitter. Timings stay out of that file, so a re-run with the same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from ...errors import ProtocolError
from ...protocol import FileEntry
from ..kind import register_kind
from ..local_models import chat_once
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
)

if TYPE_CHECKING:
    from ...hub import Identity
    from ..jobs import JobServices
    from ..units import UnitContext

KIND = "batch-infer"
OUTPUT_FILE = "outputs.jsonl"
DEFAULTS: dict[str, Any] = {"max_tokens": 64, "temperature": 0.0, "seed": 0, "shard_size": 16}
SPEC_KEYS = {"model", "dataset", "dataset_file", "output", *DEFAULTS}
ROLES = ("system", "user", "assistant")


def row_problem(row: dict[str, Any]) -> str | None:
    """A row is a 'prompt' string or chat 'messages' ([{role, content}], ending with the user)."""
    if isinstance(row.get("prompt"), str) and row["prompt"]:
        return None
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "a row needs a non-empty string 'prompt' or a non-empty list 'messages'"
    for message in messages:
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            return f"each message needs 'role' ({'/'.join(ROLES)}) and a string 'content'"
    return None


def messages_of(row: dict[str, Any]) -> list[dict[str, str]]:
    if row.get("prompt"):
        return [{"role": "user", "content": row["prompt"]}]
    return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]


def row_id(row: dict[str, Any], index: int) -> Any:
    """The row's own 'id' when it has a JSON scalar one, else its position."""
    value = row.get("id")
    return value if isinstance(value, str | int) and not isinstance(value, bool) else index


class BatchInfer:
    name = KIND
    checkpointed = False

    def validate(self, spec: dict[str, Any], services: JobServices, caller: Identity) -> dict[str, Any]:
        check_keys(KIND, spec, SPEC_KEYS)
        output = output_field(KIND, spec, caller)
        model_id, model_rev = repo_field(KIND, spec, "model")
        model_commit, model_manifest = pin(KIND, services, caller, "model", model_id, model_rev)
        if not any(f.path.endswith(".gguf") for f in model_manifest.files):
            raise ProtocolError(
                f"{KIND}: model {model_id} has no GGUF file; providers run GGUF models with llama.cpp"
            )
        data_id, data_rev = repo_field(KIND, spec, "dataset")
        data_commit, data_manifest = pin(KIND, services, caller, "dataset", data_id, data_rev)
        entry, rows = dataset_rows(
            KIND, services, data_manifest, data_id, spec.get("dataset_file"), row_problem
        )
        return {
            "model": {"repo": model_id, "commit": model_commit},
            "dataset": {"repo": data_id, "commit": data_commit, "file": entry.path, "rows": len(rows)},
            "output": output,
            "max_tokens": int_field(KIND, spec, "max_tokens", DEFAULTS["max_tokens"], 1, 8192),
            "temperature": float_field(KIND, spec, "temperature", DEFAULTS["temperature"], 0.0, 2.0),
            "seed": int_field(KIND, spec, "seed", DEFAULTS["seed"], 0, 2**31 - 1),
            "shard_size": int_field(KIND, spec, "shard_size", DEFAULTS["shard_size"], 1, 10_000),
        }

    def plan(
        self, job_id: str, spec: dict[str, Any], services: JobServices
    ) -> list[tuple[str, dict[str, Any]]]:
        size, total = spec["shard_size"], spec["dataset"]["rows"]
        common = {k: spec[k] for k in ("model", "dataset", "max_tokens", "temperature", "seed")}
        return [
            (f"shard-{start // size:05d}", {**common, "start": start, "end": min(start + size, total)})
            for start in range(0, total, size)
        ]

    def resources(self, payload: dict[str, Any]) -> dict[str, int]:
        return {"CPU": 1}

    def run(self, payload: dict[str, Any], ctx: UnitContext) -> dict[str, Any]:
        dataset = payload["dataset"]
        folder = pull_snapshot(
            ctx, "dataset", dataset["repo"], dataset["commit"], include=lambda path: path == dataset["file"]
        )
        rows = parse_rows(KIND, (folder / dataset["file"]).read_bytes(), row_problem)
        start, end = payload["start"], payload["end"]
        ctx.log(f"rows {start}..{end - 1} of {dataset['repo']} on {payload['model']['repo']}")
        params = {
            "max_tokens": payload["max_tokens"],
            "temperature": payload["temperature"],
            "seed": payload["seed"],
        }
        out = []
        for index in range(start, end):
            text, prompt_tokens, completion_tokens, seconds = chat_once(
                ctx, payload["model"]["repo"], payload["model"]["commit"], messages_of(rows[index]), params
            )
            out.append(
                {
                    "index": index,
                    "id": row_id(rows[index], index),
                    "output": text,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "seconds": round(seconds, 4),
                }
            )
        return {"start": start, "end": end, "rows": out}

    def audit_view(self, result: dict[str, Any]) -> str:
        """Seeded sampling must reproduce outputs and token counts exactly; timings never do."""
        view = [(r["index"], r["output"], r["prompt_tokens"], r["completion_tokens"]) for r in result["rows"]]
        return hashlib.sha256(json.dumps(view).encode()).hexdigest()

    def finish(self, job: dict[str, Any], results: dict[str, Any], services: JobServices) -> dict[str, Any]:
        """One line per input row, in row order, committed to the output dataset as the submitter."""
        spec = job["spec"]
        rows = sorted((r for result in results.values() for r in result["rows"]), key=lambda r: r["index"])
        if len(rows) != spec["dataset"]["rows"]:
            raise RuntimeError(f"{len(rows)} outputs for {spec['dataset']['rows']} input rows")
        lines = [
            json.dumps(
                {k: r[k] for k in ("id", "index", "output", "prompt_tokens", "completion_tokens")},
                ensure_ascii=False,
            )
            for r in rows
        ]
        digest, _ = services.hub.store.ingest_bytes(("\n".join(lines) + "\n").encode())
        entry = FileEntry.from_digest(OUTPUT_FILE, digest)
        card = {
            "source_model": spec["model"]["repo"],
            "model_commit": spec["model"]["commit"],
            "dataset": spec["dataset"]["repo"],
            "dataset_commit": spec["dataset"]["commit"],
            "job": job["id"],
            "description": f"Outputs of {spec['model']['repo']} on {spec['dataset']['repo']} (job {job['id']})",
        }
        identity = services.accounts.identity_for(job["submitter"])
        published, _ = services.hub.commit(
            identity,
            "dataset",
            spec["output"],
            [entry],
            card=card,
            message=f"batch-infer outputs from job {job['id']}",
        )
        return {
            "output": spec["output"],
            "commit": published.commit_id,
            "file": OUTPUT_FILE,
            "rows": len(rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "seconds": round(sum(r["seconds"] for r in rows), 3),
        }


register_kind(BatchInfer())
