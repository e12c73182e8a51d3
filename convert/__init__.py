"""edgetune.convert: TFLite (fp32, fp16, dynamic, int8, accuracy-controlled int8, QAT, pruned) and ONNX exports.

Lazy exports (PEP 562): the preset registry and the config import without TensorFlow.
"""

from __future__ import annotations

from edgetune._lazy import lazy_exports

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
    "correct_biases": "edgetune.convert.bias_correction",
    "fold_preprocessing": "edgetune.convert.input_fold",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
