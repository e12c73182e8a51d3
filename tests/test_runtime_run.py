"""End to end: a trained run dir -> .tflite/.onnx -> the runtime agrees with the Keras model on its test split.

The Keras side reads images with training's TensorFlow pipeline, the runtime side with Pillow +
numpy: this is the check that training and deployment see the same pixels and the same model.
Slow (trains a tiny run once per session, then converts it with `edgetune.convert`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetune.contract import read_metadata, read_split
from edgetune.runtime import Predictor

pytestmark = pytest.mark.slow


def export(run: Path, out: Path) -> list[Path]:
    """The fp32 presets through the real convert stage, copied out so the shared run dir stays untouched."""
    import shutil

    from edgetune.convert import ConvertConfig, convert_run

    copy = out / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export", "tb"))
    rows = convert_run(ConvertConfig(run=copy, preset="tflite_fp32,onnx_fp32", calibration_images=8))
    assert [r.status for r in rows] == ["ok", "ok"], [r.detail for r in rows]
    return [Path(r.path) for r in rows]


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
