"""TFLite exports from the deployment SavedModel (not from_keras_model: fragile on Keras 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf


def representative(images: np.ndarray) -> callable:
    """The converter's calibration feed: one float32 image (raw 0..255) at a time."""

    def gen() -> Iterator[list[np.ndarray]]:
        for img in images:
            yield [img[None].astype(np.float32)]

    return gen


def convert_saved_model(saved_model: Path, kind: str, calibration: np.ndarray | None = None) -> bytes:
    """kind: fp32 | fp16 | dynamic | int8 | int8_uint8io."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    return _configure(converter, kind, calibration).convert()


def _configure(converter, kind: str, calibration: np.ndarray | None):
    if kind == "fp32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif kind in ("int8", "int8_uint8io"):
        if calibration is None or len(calibration) == 0:
            raise ValueError("full integer quantization needs calibration images")
        converter.representative_dataset = representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if kind == "int8_uint8io":
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
    elif kind != "dynamic":
        raise ValueError(f"unknown TFLite kind {kind!r}")
    return converter
