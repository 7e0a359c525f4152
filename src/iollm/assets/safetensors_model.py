"""A Hugging Face format (bf16 safetensors) SmolLM2, converted locally from the packaged GGUF.

The hub is not reachable, yet the platform needs a real safetensors model to share and serve. transformers
can read the GGUF and write safetensors. torch and transformers are heavy, so they are imported only here,
inside the function, and are not needed to import ``iollm.assets``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from types import ModuleType

from .models import (
    AssetError,
    ensure_model,
    file_lock,
    lock_path_for,
    models_dir,
    remove_stale_temps,
    say,
    sha256_file,
    temp_prefix_for,
)

SAFETENSORS_DIRNAME = "smollm2-135m-instruct-safetensors"
MANIFEST_NAME = "MANIFEST.sha256"
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")
_INSTALL_HINT = "pip install torch==2.13.0 transformers==5.24.0 accelerate==1.15.0 gguf==0.19.0"


def safetensors_dir() -> Path:
    return models_dir() / SAFETENSORS_DIRNAME


def read_manifest(folder: Path) -> dict[str, str]:
    """``MANIFEST.sha256`` (``sha256sum`` format) as file name -> sha256."""
    entries = {}
    for line in (folder / MANIFEST_NAME).read_text().splitlines():
        sha, _, name = line.partition("  ")
        if sha and name:
            entries[name] = sha
    return entries


def write_manifest(folder: Path) -> None:
    """Record every produced file's hash; ``sha256sum -c MANIFEST.sha256`` checks the folder."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_NAME)
    (folder / MANIFEST_NAME).write_text("".join(f"{sha256_file(p)}  {p.name}\n" for p in files))


def manifest_ok(folder: Path, verify: bool = False) -> bool:
    """The folder is complete if its manifest lists the required files and they exist (or hash right)."""
    try:
        entries = read_manifest(folder)
    except OSError:
        return False
    if any(name not in entries for name in REQUIRED_FILES):
        return False
    for name, sha in entries.items():
        path = folder / name
        if not path.is_file() or (verify and sha256_file(path) != sha):
            return False
    return True


def _import_ml() -> tuple[ModuleType, ModuleType]:
    """torch and transformers, or an error that says what to install."""
    try:
        import accelerate  # noqa: F401  (transformers needs it to load GGUF files)
        import gguf  # noqa: F401
        import torch
        import transformers
    except ImportError as exc:
        raise AssetError(
            f"converting SmolLM2 to safetensors needs torch, transformers, accelerate and gguf "
            f"({exc.name or exc} is missing): {_INSTALL_HINT}"
        ) from exc
    return torch, transformers


def _convert(gguf_path: Path, out_dir: Path, progress: bool) -> None:
    """Dequantize the GGUF to bf16 and save model, generation config and tokenizer in HF format."""
    torch, transformers = _import_ml()
    hf_logging = transformers.utils.logging
    bars_were_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    # transformers warns that bf16 is slow for *inference* on packed GGUF weights; irrelevant here.
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.bfloat16, output_loading_info=True
        )
        if info.get("missing_keys"):
            raise AssetError(f"GGUF conversion left weights uninitialised: {sorted(info['missing_keys'])}")
        # A GGUF-loaded model counts as quantized and refuses save_pretrained, although its weights are
        # already dequantized; clearing the quantizer settings lets it save as plain bf16.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        model.save_pretrained(out_dir)
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        tokenizer.save_pretrained(out_dir)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_were_on and not progress:
            hf_logging.enable_progress_bar()
    missing = [name for name in REQUIRED_FILES if not (out_dir / name).is_file()]
    if missing:
        raise AssetError(f"conversion did not produce {', '.join(missing)} in {out_dir}")


def _build(dest: Path, gguf_path: Path, progress: bool) -> None:
    """Convert into a temp folder next to ``dest`` and rename it into place only when complete."""
    work = Path(tempfile.mkdtemp(prefix=temp_prefix_for(dest), dir=dest.parent))
    try:
        _convert(gguf_path, work, progress)
        for path in work.iterdir():
            if path.is_file():
                os.chmod(path, 0o644)
        write_manifest(work)
        os.chmod(work, 0o755)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix_for(dest), dir=dest.parent))
            os.replace(dest, old / "old")
        os.replace(work, dest)
    finally:
        remove_stale_temps(dest)


def ensure_smollm2_safetensors(progress: bool = True, verify: bool = False) -> Path:
    """Folder with SmolLM2-135M-Instruct in HF format (bf16 safetensors), converted once and reused."""
    dest = safetensors_dir()
    if manifest_ok(dest, verify):
        return dest
    _import_ml()  # fail before downloading anything if the converter cannot run
    gguf_path = ensure_model("smollm2", progress=progress)
    with file_lock(lock_path_for(dest), "smollm2 safetensors", progress):
        if manifest_ok(dest, verify):
            return dest
        remove_stale_temps(dest)
        started = time.monotonic()
        say(progress, "converting SmolLM2 GGUF to bf16 safetensors with transformers (about 30 s) ...")
        _build(dest, gguf_path, progress)
        say(progress, f"  converted in {time.monotonic() - started:.1f} s: {dest}")
    return dest
