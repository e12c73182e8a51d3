"""The export presets: names a reader can decode (format, weights, activations, I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from edgetune import UserError


@dataclass(frozen=True)
class Preset:
    name: str
    suffix: str
    """.tflite or .onnx"""
    integer: bool
    """Integer kernels (judged against the int8 agreement floor) or float."""
    description: str
    pruned: bool = False
    """Retrained by pruning: judged against the pruned agreement floor."""


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("tflite_fp32", ".tflite", False, "TFLite float32: the reference export, same numbers as Keras"),
    Preset("tflite_fp16", ".tflite", False, "TFLite float16 weights (half the size), float compute on CPU"),
    Preset("tflite_dynamic", ".tflite", True, "TFLite dynamic range: int8 weights, float activations, no calibration"),
    Preset("tflite_int8", ".tflite", True, "TFLite full integer int8 (calibrated), float input and output"),
    Preset("tflite_int8_ac", ".tflite", True, "TFLite int8, accuracy-controlled: the fewest most sensitive layers kept "
           "in float until agreement >= --ac-min-agreement and drop <= --max-drop"),
    Preset("tflite_int8_uint8io", ".tflite", True, "TFLite full integer int8 with uint8 input/output, for raw camera bytes"),
    Preset("tflite_qat_int8", ".tflite", True, "quantization-aware fine-tune (tfmot), then full integer int8 TFLite"),
    Preset("tflite_pruned_dynamic", ".tflite", True, "magnitude pruning to --sparsity (tfmot), then dynamic range TFLite", pruned=True),
    Preset("tflite_pruned_int8", ".tflite", True, "magnitude pruning to --sparsity (tfmot), then full integer int8 TFLite", pruned=True),
    Preset("onnx_fp32", ".onnx", False, "ONNX float32 via tf2onnx (opset 17)"),
    Preset("onnx_dynamic", ".onnx", True, "ONNX Runtime dynamic quantization: int8 weights, activations quantized on the fly"),
    Preset("onnx_int8", ".onnx", True, "ONNX Runtime static QDQ int8, per-channel weights, calibrated on training images"),
]}


def resolve(spec: str) -> list[Preset]:
    """'all' or a comma-separated list of names -> presets, with a clear error listing valid names."""
    names = list(PRESETS) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown or not names:
        raise UserError(f"unknown preset(s) {unknown or spec!r}; valid: all, {', '.join(PRESETS)}")
    return [PRESETS[n] for n in dict.fromkeys(names)]


def describe() -> str:
    width = max(len(n) for n in PRESETS)
    return "\n".join(f"  {p.name:<{width}}  {p.description}" for p in PRESETS.values())
