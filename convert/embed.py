"""Put the labels and the contract inside every export, so the model file alone is enough to run it.

    .tflite  standard TFLite metadata written with MediaPipe's metadata writers (`tflite_metadata`): input
             image properties and normalization, output scores with labels.txt; edgetune.json (the contract)
             as a model-level associated file. Without mediapipe: labels.txt and edgetune.json only, as the
             zip of associated files TFLite models carry (the runtime reads them all the same).
    .onnx    `metadata_props` (`onnx_export.set_metadata_props`): `edgetune.contract`, `labels`, `edgetune.input`.

The keys and file names are read back by `edgetune.runtime.embedded` (lean: no MediaPipe, no TensorFlow).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from edgetune.contract import ModelMetadata
from edgetune.runtime.embedded import (CONTRACT_FILE, LABELS_FILE, ONNX_CONTRACT_KEY, ONNX_INPUT_KEY, ONNX_LABELS_KEY)

NOT_EMBEDDED = ("parity", "conversion", "embedded")
"""Sidecar fields that describe the finished file (measured after embedding): never inside it."""
MEDIAPIPE_HINT = 'pip install "edgetune[mediapipe]"'


def contract_for_embedding(meta: ModelMetadata) -> dict:
    """The contract as it goes inside the model: the sidecar's content less what is measured on the final file."""
    return {k: v for k, v in meta.to_dict().items() if k not in NOT_EMBEDDED}


def input_description(meta: ModelMetadata) -> str:
    """One line a person (or Netron) reads: what the input takes and what the output means."""
    p, i, o = meta.preprocessing, meta.input, meta.output
    lo, hi = p.input_range
    return (f"input {i.dtype} {i.shape} NHWC {p.channels} pixels mapped to {lo:g}..{hi:g}, {p.resize} resize to "
            f"{p.size[0]}x{p.size[1]} (antialias {str(p.antialias).lower()}), normalization {p.normalization}; "
            f"output {o.dtype} {o.shape} {meta.output_kind} over the labels, in order")


def embed_metadata(model_path: Path, meta: ModelMetadata) -> dict:
    """Rewrite `model_path` with its labels and contract inside; returns what was embedded (for the sidecar JSON).

    The standard TFLite metadata needs mediapipe (an optional extra); without it, or where MediaPipe's writer
    refuses the model, the contract is still embedded and the JSON says why the standard part is missing.
    """
    contract = contract_for_embedding(meta)
    if model_path.suffix == ".onnx":
        from edgetune.convert.onnx_export import set_metadata_props

        props = {ONNX_CONTRACT_KEY: json.dumps(contract, default=str), ONNX_LABELS_KEY: json.dumps(list(meta.labels)),
                 ONNX_INPUT_KEY: input_description(meta)}
        set_metadata_props(model_path, props)
        return {"onnx_metadata_props": sorted(props)}
    from edgetune.convert import tflite_metadata

    model = model_path.read_bytes()
    version = tflite_metadata.mediapipe_version()
    standard = None
    if version is None:
        why = f"skipped: mediapipe is not installed ({MEDIAPIPE_HINT})"
    else:
        try:
            standard = tflite_metadata.write_metadata(model, meta.labels, meta.preprocessing.input_range, contract)
            why = f"written with mediapipe {version} metadata writers (image classifier)"
        except Exception as exc:  # noqa: BLE001 - the contract still goes in; the JSON and the console say why
            why = f"failed: MediaPipe's writer refused the model ({type(exc).__name__}: {str(exc)[:200]})"
    if standard is None:
        _warn_once(why)
    model_path.write_bytes(standard or tflite_metadata.embed_contract_only(model, meta.labels, contract))
    info = {"tflite_metadata": why, "associated_files": [LABELS_FILE, CONTRACT_FILE]}
    note = _mediapipe_input_note(meta)
    return {**info, "note": note} if note else info


def _mediapipe_input_note(meta: ModelMetadata) -> str | None:
    """MediaPipe feeds a uint8 input the raw pixels: right only where its quantization maps q to the same pixel."""
    i = meta.input
    if i.dtype != "uint8" or i.scale is None:
        return None
    lo, hi = meta.preprocessing.input_range
    pixel_step = (hi - lo) / 255.0
    if abs(i.scale - pixel_step) <= 1e-6 * pixel_step and (i.zero_point or 0) == round(-lo / pixel_step):
        return None
    return (f"uint8 input with scale {i.scale:g} and zero point {i.zero_point}: MediaPipe feeds raw pixels, which this "
            "model reads as other values; use the float-input exports with MediaPipe")


def _warn_once(why: str) -> None:
    # One line per distinct reason (Python shows a warning once per message and place).
    warnings.warn(f"standard TFLite metadata {why}; labels and the contract are still inside each .tflite", stacklevel=3)
