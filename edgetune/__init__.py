"""edgetune: fine-tune MobileNetV2 on your image folders, export it to TFLite/ONNX, run it on the edge.

Stages live in subpackages (`edgetune.train`, `edgetune.convert`, `edgetune.runtime`,
`edgetune.benchmarks`); this top package stays lean so that a Raspberry Pi can import it.
"""

import os
from pathlib import Path

from edgetune.contract import ContractError, ModelMetadata, Preprocessing, read_metadata, write_metadata

__version__ = "0.1.0"


class UserError(Exception):
    """Bad input from the user (missing folder, out-of-range flag, ...): one clear message, exit code 2."""


def edgetune_home() -> Path:
    """Cache root for downloads (data sets, weights): $EDGETUNE_HOME, default ~/.cache/edgetune."""
    return Path(os.environ.get("EDGETUNE_HOME", Path.home() / ".cache" / "edgetune"))


_LAZY = {
    "PipelineConfig": "edgetune.pipeline",
    "PipelineResult": "edgetune.pipeline",
    "run_pipeline": "edgetune.pipeline",
    "BundleConfig": "edgetune.bundle",
    "make_bundle": "edgetune.bundle",
    "verify_bundle": "edgetune.bundle",
    "check_output": "edgetune.outputs",
    "staged_output": "edgetune.outputs",
}


def __getattr__(name: str):
    # The main job and the bundle are public API too, imported on first use (they import the stages lazily).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgetune' has no attribute {name!r}")


__all__ = sorted(["edgetune_home", "ContractError", "ModelMetadata", "Preprocessing", "UserError", "read_metadata",
                  "write_metadata", "__version__", *_LAZY])
