"""Keras baseline rows (TensorFlow imported inside the functions only, never on a Pi).

Two rows per thread count, so the speed-up of the exported models is measured side by side in the
same results file: `model.predict` on one image (what the tutorial does, with its per-call
overhead) and a compiled call (`tf.function(jit_compile=True)`, falling back to a plain
`tf.function` where XLA cannot compile the graph). TensorFlow's thread pools can only be sized
before it starts, so each thread count should run in a fresh process (the bench runner does that).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from edgetune.benchmarks.latency import LatencyRow, Timing, peak_rss_mb, summarize, time_calls


def tensorflow_available() -> bool:
    """Whether TensorFlow and Keras are installed (checked without importing them)."""
    import importlib.util

    try:
        return importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("keras") is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as absent
        return False


def bench_keras(run_dir: str | Path, threads: int, timing: Timing, image: np.ndarray | None = None,
                device: str = "cpu") -> list[LatencyRow]:
    """Latency of the run's Keras model (deployment graph) at batch 1: predict() and a compiled call.

    Args:
        run_dir: The training run dir (model.keras).
        threads: TensorFlow intra-op threads (applied only if TensorFlow has not started yet).
        timing: Warm-up and timed-run limits.
        image: One preprocessed float32 (H, W, 3) 0..255 image; random when None.
        device: 'cpu' or 'gpu' (TensorFlow's GPU device; 'unavailable' rows without one).

    Returns:
        Two rows (keras_predict, keras_compiled), or `unavailable` rows.
    """
    model_file = Path(run_dir) / "model.keras"
    base = dict(name="keras", format="keras", preset="keras", model=str(model_file), threads=threads, device=device,
                size_bytes=model_file.stat().st_size if model_file.is_file() else None)
    if not tensorflow_available():
        return [LatencyRow(mode=m, status="unavailable", note="TensorFlow is not installed", **base)
                for m in ("keras_predict", "keras_compiled")]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    note = ""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
        if device == "cpu":
            tf.config.set_visible_devices([], "GPU")  # a CPU row must not silently run on a GPU
    except RuntimeError:
        note = "TensorFlow was already initialized: thread count not applied"
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        return [LatencyRow(mode=m, status="unavailable", note="no GPU visible to TensorFlow", **base)
                for m in ("keras_predict", "keras_compiled")]
    from edgetune.train.model import deployment_model, load_model

    tf_device = "/GPU:0" if device == "gpu" else "/CPU:0"
    t0 = time.perf_counter()
    with tf.device(tf_device):
        model = deployment_model(load_model(model_file))
    load_s = time.perf_counter() - t0
    h, w = model.input_shape[1:3]
    x = image if image is not None else np.random.default_rng(0).uniform(0, 255, (h, w, 3)).astype(np.float32)
    x = np.ascontiguousarray(x[None], dtype=np.float32)
    common = dict(load_s=load_s, warmup=timing.warmup, backend=f"tensorflow {tf.__version__}",
                  accelerator=tf_device.strip("/"), accelerator_confirmed=True)
    rows = []

    with tf.device(tf_device):
        t0 = time.perf_counter()
        model.predict(x, verbose=0)
        first = (time.perf_counter() - t0) * 1000.0
        samples = time_calls([lambda: model.predict(x, verbose=0)], timing)[0]
    rows.append(LatencyRow(mode="keras_predict", first_ms=first, peak_rss_mb=peak_rss_mb(), note=note, **common, **base,
                           **summarize(samples)))

    xt = tf.constant(x)
    compiled, how = None, ""
    for jit in (True, False):
        fn = tf.function(lambda t: model(t, training=False), jit_compile=jit)
        try:
            with tf.device(tf_device):
                t0 = time.perf_counter()
                fn(xt).numpy()
                first = (time.perf_counter() - t0) * 1000.0
            compiled, how = fn, "tf.function(jit_compile=True)" if jit else "tf.function (XLA failed)"
            break
        except Exception as exc:  # XLA unsupported op / missing backend: fall back to graph mode
            how = f"XLA failed: {str(exc).splitlines()[0][:120]}"
    with tf.device(tf_device):
        samples = time_calls([lambda: compiled(xt).numpy()], timing)[0]
    rows.append(LatencyRow(mode="keras_compiled", first_ms=first, peak_rss_mb=peak_rss_mb(),
                           note="; ".join(v for v in (how, note) if v), **common, **base, **summarize(samples)))
    return rows
