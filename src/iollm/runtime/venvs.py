"""Isolated Python environments for Envfile REQUIRES, one per pinned package set, shared by every
environment that pins the same set.

Pinning (:meth:`VenvManager.pin`) turns the Envfile's top-level pins into the full dependency closure,
each package at one version with the SHA-256 of the exact file pip fetched (``pip download`` resolves
as if nothing were installed, so the closure does not depend on what this node happens to have). The
closure's :func:`requirements_key` names the folder ``<root>/<key>``; building it
(:meth:`VenvManager.ensure`) is idempotent, serialised by an ``fcntl`` lock, and done in a temporary
folder that is renamed into place only when complete, so a killed build leaves nothing usable and the
next build removes its remains.

Layering: a venv holds only the closure's packages, and a ``.pth`` file appended after its own
site-packages adds the node's site-packages (``site.addsitedir``, so the node's editable install of
iollm works too). The environment's pins therefore win, while torch, transformers, llama_cpp and iollm
come from the node without being copied. A closure package that the node already has at the same
version is not installed again (it is the same release; the venv records it as inherited and is
rebuilt if the node's version ever changes). Packages are installed with
``<node python> -m pip --python <venv python> install --no-deps --require-hashes``: the venv needs no
pip of its own, and the node's packages are never touched.

Only wheels are accepted (``--only-binary=:all:``): an sdist would run its build code on the node at
pin time and could build differently elsewhere, while a wheel installs the same bytes everywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from ..errors import IollmError, ProtocolError
from .envfile import BaseRef, Envfile, Requirement

log = logging.getLogger("iollm.runtime.venvs")

MARKER = "iollm-venv.json"
PIP_TIMEOUT = 1800.0
_NODE_PTH = "zz_iollm_node.pth"
_PIP_OPTIONS = ("--no-input", "--only-binary=:all:", "--progress-bar", "off", "--disable-pip-version-check")


class RequirementsUnavailable(ProtocolError):
    """REQUIRES names a package or version the package index does not have (or a hash that differs)."""

    code = "requirements_unavailable"


class VenvBuildFailed(IollmError):
    code = "venv_build_failed"


@dataclass(frozen=True)
class VenvInfo:
    """A ready environment: its interpreter, the pinned closure, and what it takes from the node."""

    path: Path
    python: Path
    key: str
    packages: tuple[Requirement, ...]
    inherited: dict[str, str] = field(default_factory=dict)
    created: bool = False  # built by this call (False: reused)
    seconds: float = 0.0


def requirements_key(pins: Iterable[Requirement]) -> str:
    """The Envfile's key for a pin set (see :meth:`Envfile.requirements_key`): order and case free."""
    return Envfile(BaseRef(kind="path", path="/"), requires=list(pins)).requirements_key()


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class VenvManager:
    """Pins REQUIRES and builds (or reuses) the environment for a pinned closure under ``root``."""

    def __init__(self, root: Path, base_python: str = sys.executable) -> None:
        self.root = Path(root)
        self.base_python = base_python
        self._node: dict[str, Any] | None = None

    # -- the node's own packages -----------------------------------------------------------------

    def node_packages(self, refresh: bool = False) -> dict[str, Any]:
        """``{"site": [dirs], "dists": {name: version}}`` of the node interpreter (read, never changed)."""
        if self._node is None or refresh:
            script = (
                "import json, site, importlib.metadata as m\n"
                "d = {}\n"
                "for x in m.distributions():\n"
                "    n = x.metadata['Name']\n"
                "    if n: d.setdefault(n, x.version)\n"
                "print(json.dumps({'site': site.getsitepackages(), 'dists': d}))\n"
            )
            out = self._run([self.base_python, "-c", script], "reading the node's packages", timeout=60)
            data = json.loads(out)
            data["dists"] = {canonicalize_name(k): v for k, v in data["dists"].items()}
            self._node = data
        return self._node

    # -- pinning ---------------------------------------------------------------------------------

    def pin(self, requirements: Iterable[Requirement]) -> list[Requirement]:
        """The full closure of ``requirements``: ``name==version --hash=sha256:...`` for every package.

        Hashes the Envfile already gives must include the hash of the file pip fetches here; they are
        kept as given (so a pinned Envfile pins to the same key on every node). Extras are dropped:
        the closure lists the packages they pull in, and installs run with ``--no-deps``.
        """
        wanted = {r.name: r for r in requirements}
        if not wanted:
            return []
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".pin-", dir=self.root) as scratch:
            listing = Path(scratch, "requirements.txt")
            listing.write_text("".join(f"{_unhashed(r)}\n" for r in wanted.values()))
            dest = Path(scratch, "files")
            command = [self.base_python, "-m", "pip", "download", *_PIP_OPTIONS, "--dest", str(dest)]
            self._run([*command, "-r", str(listing)], "resolving REQUIRES", error=RequirementsUnavailable)
            found = _downloaded(dest)
        closure = []
        for name, (version, digest) in sorted(found.items()):
            given = wanted.get(name)
            if given is not None and given.hashes and digest not in given.hashes:
                raise RequirementsUnavailable(
                    f"REQUIRES {name}=={version}: the index serves a file with {digest}, which is not "
                    "among the Envfile's hashes; pin the hash of the file for this platform "
                    "(iollm env export shows it) or drop the --hash to accept it"
                )
            hashes = given.hashes if given is not None and given.hashes else (digest,)
            closure.append(Requirement(name, version, hashes))
        return closure

    # -- building --------------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        return self.root / key

    def ensure(self, requirements: Iterable[Requirement]) -> VenvInfo:
        """The environment for this pin set, built once (pins without hashes are pinned first)."""
        pins = list(requirements)
        if not pins or any(not p.hashes for p in pins):
            pins = self.pin(pins)
        key = requirements_key(pins)
        target = self.path_for(key)
        ready = self._ready(target, key)
        if ready is not None:
            return ready
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(key):
            ready = self._ready(target, key)
            if ready is not None:
                return ready
            return self._build(target, key, pins)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        with open(self.root / f".{key}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _ready(self, target: Path, key: str) -> VenvInfo | None:
        """The finished environment at ``target``, or None (absent, or the node's inherited versions moved)."""
        try:
            meta = json.loads((target / MARKER).read_text())
        except (OSError, ValueError):
            return None
        python = target / "bin" / "python"
        dists = self.node_packages()["dists"]
        stale = {n: v for n, v in meta.get("inherited", {}).items() if dists.get(n) != v}
        if not python.exists() or meta.get("key") != key or stale:
            if stale:
                log.info("rebuilding venv %s: the node's %s changed", key[:12], ", ".join(stale))
            return None
        pins = tuple(Requirement.parse(p) for p in meta["packages"])
        return VenvInfo(target, python, key, pins, dict(meta.get("inherited", {})))

    def _build(self, target: Path, key: str, pins: list[Requirement]) -> VenvInfo:
        started = time.perf_counter()
        for leftover in self.root.glob(f".{key}.tmp-*"):  # remains of a killed build (we hold the lock)
            shutil.rmtree(leftover, ignore_errors=True)
        if target.exists():  # stale: a node package it inherited has changed
            old = self.root / f".{key}.tmp-old-{os.getpid()}"
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        temp = self.root / f".{key}.tmp-{os.getpid()}"
        node = self.node_packages(refresh=True)
        inherited = {p.name: p.version for p in pins if node["dists"].get(p.name) == p.version}
        install = [p for p in pins if p.name not in inherited]
        try:
            self._run([self.base_python, "-m", "venv", "--without-pip", str(temp)], "creating the venv")
            python = temp / "bin" / "python"
            if install:
                listing = temp / "iollm-requirements.txt"
                listing.write_text("".join(f"{p}\n" for p in install))
                command = [self.base_python, "-m", "pip", "--python", str(python), "install", *_PIP_OPTIONS]
                command += ["--no-deps", "--require-hashes", "--no-warn-script-location", "--no-compile"]
                self._run([*command, "-r", str(listing)], "installing REQUIRES")
            site = self._site_packages(python)
            # After the install, so pip never sees (or tries to replace) the node's packages.
            (site / _NODE_PTH).write_text(
                "".join(f"import site; site.addsitedir({d!r})\n" for d in node["site"])
            )
            _relocate_scripts(temp / "bin", str(temp), str(target))
            meta = {
                "key": key,
                "packages": [str(p) for p in pins],
                "installed": [p.name for p in install],
                "inherited": inherited,
                "base_python": self.base_python,
                "node_site": node["site"],
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (temp / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            os.replace(temp, target)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        seconds = time.perf_counter() - started
        log.info(
            "built venv %s (%d packages, %d inherited) in %.1f s",
            key[:12],
            len(pins),
            len(inherited),
            seconds,
        )
        return VenvInfo(target, target / "bin" / "python", key, tuple(pins), inherited, True, seconds)

    def _site_packages(self, python: Path) -> Path:
        script = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        return Path(self._run([str(python), "-c", script], "locating site-packages").strip())

    def _run(
        self,
        command: list[str],
        what: str,
        error: type[IollmError] = VenvBuildFailed,
        timeout: float = PIP_TIMEOUT,
    ) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise VenvBuildFailed(f"{what} took longer than {timeout:.0f} s") from exc
        if done.returncode != 0:
            raise error(f"{what} failed: {_tail(done.stderr or done.stdout)}")
        return done.stdout


def _unhashed(pin: Requirement) -> str:
    extras = f"[{','.join(pin.extras)}]" if pin.extras else ""
    return f"{pin.name}{extras}=={pin.version}"


def _downloaded(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, "sha256:<hex>") for every wheel or sdist pip downloaded."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(path.name)
        else:
            name, version = parse_sdist_filename(path.name)
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        found[canonicalize_name(name)] = (str(version), f"sha256:{sha.hexdigest()}")
    return found


def _relocate_scripts(bin_dir: Path, old: str, new: str) -> None:
    """Scripts in bin/ name the folder they were built in (shebangs, activate): point them at the final one."""
    for path in bin_dir.iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if old in text:
            mode = path.stat().st_mode
            path.write_text(text.replace(old, new))
            os.chmod(path, mode)
