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


__all__ = ["edgetune_home", "ContractError", "ModelMetadata", "Preprocessing", "UserError", "read_metadata", "write_metadata", "__version__"]
