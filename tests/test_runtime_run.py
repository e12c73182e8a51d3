"""End to end: a trained run dir -> .tflite/.onnx -> the runtime agrees with the Keras model on its test split.

The Keras side reads images with training's TensorFlow pipeline, the runtime side with Pillow +
numpy: this is the check that training and deployment see the same pixels and the same model.
Slow (trains a tiny run once per session); the conversion here is minimal (the convert stage owns
the real exporters) and writes metadata through the contract like they do.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetune.contract import TensorSpec, read_metadata, read_split, write_metadata
from edgetune.runtime import Predictor

pytestmark = pytest.mark.slow


def export(run: Path, out: Path) -> list[Path]:
    import tensorflow as tf

    from edgetune.runtime._backends import open_backend

    out.mkdir(parents=True, exist_ok=True)
    tflite = out / "fp32.tflite"
    tflite.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(run / "saved_model")).convert())
    onnx = out / "fp32_onnx.onnx"
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(run / "saved_model"), "--opset", "17",
                    "--output", str(onnx)], check=True, capture_output=True)
    for model in (tflite, onnx):
        meta = read_metadata(run / "metadata.json")
        b = open_backend(model)
        meta.input = TensorSpec(shape=[1, *b.inputs[0].shape[1:]], dtype=str(b.inputs[0].dtype))
        meta.output = TensorSpec(shape=[1, b.outputs[0].shape[-1]], dtype=str(b.outputs[0].dtype))
        meta.preset = model.stem
        write_metadata(model.with_suffix(".json"), meta)
    return [tflite, onnx]


def test_runtime_matches_keras_on_the_test_split(tiny_run_dir, tmp_path):
    from edgetune.train.data import load_images
    from edgetune.train.model import load_model

    run = tiny_run_dir
    meta = read_metadata(run / "metadata.json")
    items = read_split(run, "test")
    assert items, "the tiny run has a test split"
    paths = [str(p) for p, _ in items]
    keras_model = load_model(run / "model.keras")
    x = load_images(paths, meta.preprocessing.size)
    logits = np.asarray(keras_model.predict(x, verbose=0))
    keras_p1 = 1 / (1 + np.exp(-logits[:, 0]))
    assert np.ptp(keras_p1) > 1e-3, "a model with constant outputs would make this test meaningless"
    for model in export(run, tmp_path / "export"):
        p = Predictor.from_path(model)
        probs = p.predict_files(paths)
        print(f"\n{model.name}: max |dP| vs Keras {np.abs(probs[:, 1] - keras_p1).max():.2e} on {len(paths)} test images")
        np.testing.assert_allclose(probs[:, 1], keras_p1, atol=1e-4)
        assert (probs.argmax(1) == (keras_p1 > 0.5)).all()
