"""What the job kinds share: checking specs, pinning hub repositories, reading datasets from the hub,
and pulling weights onto a provider. Every check runs on the node before a job is accepted, so a bad spec
is refused before any work is done."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import NotFound, ProtocolError
from ...protocol import FileEntry, LocalCache, Manifest, NodeClient, pull, split_repo_id
from ...store.reader import ChunkedFile
from ..units import PLUGIN_NAME

if TYPE_CHECKING:
    from ...hub import Identity
    from ..jobs import JobServices
    from ..units import UnitContext

MAX_DATASET_BYTES = 256 * 1024 * 1024


def check_keys(kind: str, spec: dict[str, Any], allowed: set[str]) -> None:
    """Unknown keys are refused: a typo must not silently fall back to a default."""
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ProtocolError(
            f"{kind}: unknown spec key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def int_field(kind: str, spec: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int:
    value = spec.get(key, default)
    if value is None:
        raise ProtocolError(f"{kind}: '{key}' is required (an integer)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{kind}: '{key}' must be an integer, not {json.dumps(value)}")
    if not low <= value <= high:
        raise ProtocolError(f"{kind}: '{key}' must be between {low} and {high}, not {value}")
    return value


def float_field(kind: str, spec: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{kind}: '{key}' must be a number, not {json.dumps(value)}")
    if not low <= value <= high:
        raise ProtocolError(f"{kind}: '{key}' must be between {low} and {high}, not {value}")
    return float(value)


def repo_field(kind: str, spec: dict[str, Any], key: str, revision: bool = True) -> tuple[str, str | None]:
    """'ns/name[@rev]' -> (repo id, revision or None), with the names checked."""
    value = spec.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{kind}: '{key}' must be a repository name 'namespace/name'")
    repo_id, _, rev = value.partition("@")
    if rev and not revision:
        raise ProtocolError(f"{kind}: '{key}' names a repository to write to; it takes no '@revision'")
    namespace, name = split_repo_id(repo_id)
    return f"{namespace}/{name}", rev or None


def pin(
    kind: str, services: JobServices, caller: Identity, repo_type: str, repo_id: str, revision: str | None
) -> tuple[str, Manifest]:
    """The commit a revision names now (jobs never follow a moving branch) and its manifest."""
    try:
        repo = services.hub.get_repo(caller, repo_type, repo_id)
        commit = services.hub.resolve(repo, revision)
    except NotFound as exc:
        where = f"{repo_id}@{revision}" if revision else repo_id
        raise ProtocolError(f"{kind}: {repo_type} {where!r} does not exist on this node ({exc})") from exc
    return commit, services.hub.manifest(commit)


def output_field(kind: str, spec: dict[str, Any], caller: Identity) -> str:
    """The repository the result goes to: the submitter must be allowed to write its namespace now."""
    repo_id, _ = repo_field(kind, spec, "output", revision=False)
    caller.require_write(repo_id.split("/")[0])
    return repo_id


def read_entry(services: JobServices, entry: FileEntry) -> bytes:
    return ChunkedFile(services.hub.store, [(bytes.fromhex(d), n) for d, n in entry.chunks]).read(
        0, entry.size
    )


def pick_jsonl(kind: str, manifest: Manifest, repo_id: str, wanted: Any) -> FileEntry:
    """The dataset file: the one named, else the only .jsonl, else train.jsonl."""
    files = {f.path: f for f in manifest.files if f.path.endswith(".jsonl")}
    if wanted is not None:
        if not isinstance(wanted, str) or wanted not in files:
            raise ProtocolError(
                f"{kind}: dataset {repo_id} has no JSONL file {wanted!r}; it has {sorted(files)}"
            )
        return files[wanted]
    if len(files) == 1:
        return next(iter(files.values()))
    if "train.jsonl" in files:
        return files["train.jsonl"]
    if not files:
        raise ProtocolError(f"{kind}: dataset {repo_id} has no .jsonl file")
    raise ProtocolError(
        f"{kind}: dataset {repo_id} has several .jsonl files {sorted(files)}: name one in 'dataset_file'"
    )


def parse_rows(kind: str, raw: bytes, check: Callable[[dict[str, Any]], str | None]) -> list[dict[str, Any]]:
    """JSONL rows (blank lines skipped); ``check`` says what is wrong with a row, or None."""
    rows = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"{kind}: dataset line {number} is not JSON ({exc.msg})") from exc
        problem = check(row) if isinstance(row, dict) else "it is not a JSON object"
        if problem:
            raise ProtocolError(f"{kind}: dataset line {number}: {problem}")
        rows.append(row)
    if not rows:
        raise ProtocolError(f"{kind}: the dataset file has no rows")
    return rows


def dataset_rows(
    kind: str,
    services: JobServices,
    manifest: Manifest,
    repo_id: str,
    wanted: Any,
    check: Callable[[dict[str, Any]], str | None],
) -> tuple[FileEntry, list[dict[str, Any]]]:
    entry = pick_jsonl(kind, manifest, repo_id, wanted)
    if entry.size > MAX_DATASET_BYTES:
        raise ProtocolError(f"{kind}: {entry.path} is {entry.size} bytes; the limit is {MAX_DATASET_BYTES}")
    return entry, parse_rows(kind, read_entry(services, entry), check)


def pull_snapshot(
    ctx: UnitContext, repo_type: str, repo_id: str, commit: str, include: Callable[[str], bool] | None = None
) -> Path:
    """A repository at a commit in the worker's cache (verified; a no-op when already there)."""
    destination = ctx.cache_dir / "snapshots" / repo_type / commit
    marker = destination / ".complete"
    if not marker.exists():
        with NodeClient(ctx.node_url, ctx.token) as client:
            pull(
                [client],
                repo_type,
                repo_id,
                commit,
                LocalCache(ctx.cache_dir / "cache"),
                destination,
                include=include,
                link=True,  # read only: share the cache's verified blobs, no second copy on disk
            )
        marker.touch()
    return destination


def where_am_i() -> tuple[str, str, int]:
    """(provider id, worker address, CPUs the provider lent): for logs and the torch thread count."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return "local", "", os.cpu_count() or 1
    plugin = worker.plugins.get(PLUGIN_NAME)
    cpus = getattr(plugin, "cpus", None) or worker.state.nthreads
    return (plugin.identity.id if plugin else str(worker.name)), worker.address, int(cpus)


def worker_running() -> bool:
    """False once this provider's worker is closing (it lost the node's scheduler): a run that goes on
    would only race the run that replaces it."""
    from distributed import get_worker
    from distributed.core import Status

    try:
        return get_worker().status in (Status.running, Status.paused)
    except ValueError:
        return True
