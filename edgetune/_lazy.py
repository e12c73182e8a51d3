"""Lazy public names for the stage packages (PEP 562): `import edgetune.train` stays free of TensorFlow."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """(__getattr__, __all__) for `package`, whose public names live in the submodules `exports` maps them to.

    A name's module is imported on first access, so the lean parts of a stage (its config, its CLI flags)
    import without the heavy ones.
    """
    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
