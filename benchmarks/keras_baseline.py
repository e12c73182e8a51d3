"""Keras baseline rows (TensorFlow imported inside the functions only, never on a Pi).

Four rows per thread count, so the speed-up of the exported models is measured side by side in the
same results file against what a Keras user would run: `model.predict` on one image (what the
tutorial does, with its per-call overhead), a direct `model(x, training=False)` call, a plain
`tf.function` (graph mode, the fastest Keras path on a CPU here), and `tf.function(jit_compile=True)`
(XLA, slower than graph mode on this CPU: kept to show it, never the only baseline). TensorFlow's
thread pools can only be sized before it starts, so each thread count should run in a fresh process
(the bench runner does that).
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


KERAS_MODES = ("keras_predict", "keras_call", "keras_function", "keras_compiled")
"""predict(); model(x) eager; tf.function (graph); tf.function(jit_compile=True) (XLA)."""


def bench_keras(run_dir: str | Path, threads: int, timing: Timing, image: np.ndarray | None = None,
                device: str = "cpu") -> list[LatencyRow]:
    """Latency of the run's Keras model (deployment graph) at batch 1, in each of KERAS_MODES.

    Args:
        run_dir: The training run dir (model.keras).
        threads: TensorFlow intra-op threads (applied only if TensorFlow has not started yet).
        timing: Warm-up and timed-run limits.
        image: One preprocessed float32 (H, W, 3) 0..255 image; random when None.
        device: 'cpu' or 'gpu' (TensorFlow's GPU device; 'unavailable' rows without one).

    Returns:
        One row per mode, or `unavailable` rows.
    """
    model_file = Path(run_dir) / "model.keras"
    base = dict(name="keras", format="keras", preset="keras", model=str(model_file), threads=threads, device=device,
                size_bytes=model_file.stat().st_size if model_file.is_file() else None)
    if not tensorflow_available():
        return [LatencyRow(mode=m, status="unavailable", note="TensorFlow is not installed", **base) for m in KERAS_MODES]
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
    if device == "gpu" and not tf.config.list_physical_devices("GPU"):
        return [LatencyRow(mode=m, status="unavailable", note="no GPU visible to TensorFlow", **base) for m in KERAS_MODES]
    from edgetune.train.model import deployment_model, load_model

    tf_device = "/GPU:0" if device == "gpu" else "/CPU:0"
    t0 = time.perf_counter()
    with tf.device(tf_device):
        model = deployment_model(load_model(model_file))
    load_s = time.perf_counter() - t0
    h, w = model.input_shape[1:3]
    x = image if image is not None else np.random.default_rng(0).uniform(0, 255, (h, w, 3)).astype(np.float32)
    x = np.ascontiguousarray(x[None], dtype=np.float32)
    xt = tf.constant(x)
    graph = tf.function(lambda t: model(t, training=False))
    xla = tf.function(lambda t: model(t, training=False), jit_compile=True)
    calls = {"keras_predict": (lambda: model.predict(x, verbose=0), "model.predict(x) on one image"),
             "keras_call": (lambda: model(xt, training=False).numpy(), "model(x, training=False), eager"),
             "keras_function": (lambda: graph(xt).numpy(), "tf.function, graph mode"),
             "keras_compiled": (lambda: xla(xt).numpy(), "tf.function(jit_compile=True), XLA")}
    common = dict(load_s=load_s, warmup=timing.warmup, backend=f"tensorflow {tf.__version__}",
                  accelerator=tf_device.strip("/"), accelerator_confirmed=True)
    rows = []
    for mode, (fn, how) in calls.items():
        with tf.device(tf_device):
            try:
                t0 = time.perf_counter()
                fn()
                first = (time.perf_counter() - t0) * 1000.0
                samples = time_calls([fn], timing)[0]
            except Exception as exc:  # XLA cannot compile every graph everywhere: say so in the row
                rows.append(LatencyRow(mode=mode, status="error", note=f"{how}: {str(exc).splitlines()[0][:160]}", **base))
                continue
        rows.append(LatencyRow(mode=mode, first_ms=first, peak_rss_mb=peak_rss_mb(), note="; ".join(v for v in (how, note) if v),
                               **common, **base, **summarize(samples)))
    return rows
