"""Imports point downward only: each package of ``src/iollm`` imports packages on lower floors, never one
on its own floor or above (a seam, like ``Runtime.admission`` or ``Runtime.virtual_models``, is how a
lower layer calls a higher one)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "iollm"

# Bottom to top; packages on one floor do not import each other.
FLOORS: list[set[str]] = [
    {"errors", "__version__", "lazy_exports"},
    {"store", "money", "signing", "database", "assets"},
    {"protocol"},
    {"hub"},
    {"runtime"},
    {"compute"},
    {"paths"},
    {"mining", "editor"},
    {"node"},
    {"cli"},
    {"__main__"},
]
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}


def imported_packages(path: Path) -> set[str]:
    relative = path.relative_to(SRC)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("iollm."):
                    found.add(node.module.split(".")[1])
                continue
            base = ["iollm", *relative.parts[:-1]]
            base = base[: len(base) - (node.level - 1)]
            full = base + (node.module.split(".") if node.module else [])
            found.update(full[1:2] if len(full) > 1 else (a.name for a in node.names))
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("iollm."))
    return found


def test_every_package_has_a_floor() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(FLOOR), sorted((packages | modules) - set(FLOOR))


def test_imports_point_downward_only() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        package = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        if package == "__init__":
            continue
        for target in imported_packages(path) - {package}:
            if target in FLOOR and FLOOR[target] >= FLOOR[package]:
                upward.append(f"{relative} imports {target}")
    assert not upward, "\n".join(upward)


def test_client_commands_start_without_the_server_stack() -> None:
    """`iollm push`, `iollm whoami` and the rest are clients: starting the CLI must not import the node's
    web framework, its database layer, numpy or the inference engine (each CLI call used to spend ~3 s of
    CPU importing them). A package's public names stay importable from the package, on first use."""
    import subprocess
    import sys

    heavy = ["fastapi", "sqlalchemy", "numpy", "llama_cpp", "dask", "iollm.hub.api", "iollm.paths.search"]
    probe = (
        "import sys, iollm.cli\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n"
        "from iollm.runtime import Envfile\n"
        "from iollm.paths import Search\n"
        "print(Envfile.__module__, Search.__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded, names = result.stdout.splitlines()
    assert loaded == "", f"importing the CLI loaded {loaded}"
    assert names == "iollm.runtime.envfile iollm.paths.search"
