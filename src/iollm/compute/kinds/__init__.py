"""The job kinds the compute layer ships, one module each: importing this package imports every module
in it, and each kind registers itself (``iollm.compute.kind``). A new kind is a new module here."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
