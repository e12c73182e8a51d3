"""edgetune.convert: TFLite (fp32, fp16, dynamic, int8, accuracy-controlled int8, QAT, pruned) and ONNX exports.

Lazy exports (PEP 562): the preset registry and the config import without TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConvertConfig": "edgetune.convert.config",
    "PRESETS": "edgetune.convert.presets",
    "Preset": "edgetune.convert.presets",
    "resolve": "edgetune.convert.presets",
    "convert_run": "edgetune.convert.exporter",
    "ExportRow": "edgetune.convert.exporter",
    "summary_table": "edgetune.convert.report",
    "problems": "edgetune.convert.report",
    "done_presets": "edgetune.convert.report",
    "write_flips_sheet": "edgetune.convert.flips",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgetune.convert' has no attribute {name!r}")
