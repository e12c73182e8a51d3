"""The QAT worker's input fold and its distillation batches, run where the worker runs: a tf_keras process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow_model_optimization")
pytest.importorskip("tf_keras")

SCRIPT = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    from edgetune.convert import _tfmot_worker as w

    spec = {"image_size": [32, 32], "alpha": 0.35, "units": 3, "dropout": 0.2}
    float_model = w.build_flat(spec)
    rng = np.random.default_rng(0)
    for layer in float_model.layers:  # BatchNorm statistics away from the defaults, so the fold has work to do
        if "bn" in layer.name.lower() or "BN" in layer.name:
            g, b, m, v = layer.get_weights()
            layer.set_weights([g, b + rng.normal(0, 0.1, b.shape), m + rng.normal(0, 0.1, m.shape), v * 2])
    w.freeze_batchnorm(float_model)
    folded = w.build_flat(spec, folded=True)
    w.fold_input(folded, float_model)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)

    def first_block(model):
        return w.tfk.Model(model.input, model.get_layer("bn_Conv1").output)(x, training=False).numpy()

    a, b = first_block(float_model), first_block(folded)
    inner = np.abs(a - b)[:, 1:-1, 1:-1]  # 'same' padding: the border taps see raw 128 where training saw 127.5
    print("inner", float(inner.max()), "scale", float(np.abs(a).max()))
    assert inner.max() < 1e-4 * max(1.0, float(np.abs(a).max())), inner.max()
    assert not np.allclose(w.build_flat(spec).get_layer("Conv1").get_weights()[0],
                           folded.get_layer("Conv1").get_weights()[0])

    images = rng.integers(0, 256, (40, 32, 32, 3)).astype(np.uint8)
    plain = w.matching_batches(images, float_model, 3, seed=1, mix=0.0)
    for _ in range(3):  # flipped or not, never blended; the teacher labels what the student sees
        xb, pb = next(plain)
        assert xb.shape == (32, 32, 32, 3) and pb.shape == (32, 3)
        np.testing.assert_allclose(pb.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(pb, tf.nn.softmax(float_model(xb, training=False)).numpy(), atol=1e-5)
        for img in xb:
            assert any(np.array_equal(img, src) or np.array_equal(img, src[:, ::-1]) for src in images.astype(np.float32))
    xb, _ = next(w.matching_batches(images, float_model, 3, seed=1, mix=1.0))
    sources = images.astype(np.float32)
    blended = sum(not any(np.array_equal(img, s) or np.array_equal(img, s[:, ::-1]) for s in sources) for img in xb)
    assert blended >= 24, blended  # weights uniform in 0..1: (almost) every image is a blend
    xb, pb = next(w.matching_batches(images[:5], float_model, 3, seed=1, mix=0.5))  # fewer images than a batch
    assert xb.shape == (5, 32, 32, 3) and pb.shape == (5, 3)
    logits = float_model.get_layer("logits")  # confident logits, beyond tfmot's initial [-6, 6]
    logits.set_weights([logits.get_weights()[0], np.array([-20.0, 5.0, 30.0], np.float32)])
    qat_model, n_ranges = w.quantize_model(float_model, x)
    ranges = {v.name.split("/")[-1].split(":")[0]: float(v.numpy()) for v in qat_model.get_layer("quant_logits").non_trainable_weights
              if "activation_m" in v.name}
    want = float_model(x, training=False).numpy()
    assert abs(ranges["post_activation_min"] - want.min()) < 1e-3 and abs(ranges["post_activation_max"] - want.max()) < 1e-3, ranges
    assert n_ranges == 64, n_ranges  # 63 layer outputs and the logits
    print("ok")
""")


def test_qat_worker_folds_the_input_exactly_labels_what_the_student_sees_and_calibrates_the_logits():
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
