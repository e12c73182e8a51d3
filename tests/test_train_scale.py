"""Training at speed and at scale: the stage 1/2 fast path, strategies, and two workers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_tree, pretrained_weights_or_none, tiny_train_config

from edgetune.contract import read_metadata


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fast_path_features_equal_the_plain_models_computation(tiny_dataset):
    """Cached pooled features and frontier activations reproduce the full model exactly."""
    import keras

    from edgetune.train.features import FastPath
    from edgetune.train.model import BASE, build_model, freeze_for_stage
    from edgetune.train.splits import make_splits

    cfg = tiny_train_config(tiny_dataset, tiny_dataset / "unused", feature_copies=1).resolve()
    splits = make_splits(tiny_dataset, progress=False)
    model, _ = build_model(2, (48, 48), cfg.weights, seed=0)
    fast = FastPath(model, cfg, splits, (48, 48))
    assert fast.stage2 and fast.n_front == 2  # block_11 input and the block_10 skip connection
    assert len(fast.train_copies) == 2
    from edgetune.train import load_images

    x = load_images([s.path for s in splits.val], (48, 48))
    pooled = model.get_layer("pooling")(model.get_layer(BASE)(model.get_layer("preprocess")(x), training=False)).numpy()
    np.testing.assert_allclose(fast.val[-1], pooled, atol=1e-4)
    # The frontier activations, run through the top sub-model, give the same logits as the full model.
    freeze_for_stage(model, 2, cfg.fine_tune_at)
    logits_top = fast.top_model()([np.asarray(a) for a in fast.val[:-1]], training=False).numpy()
    logits_full = model(x, training=False).numpy()
    np.testing.assert_allclose(logits_top, logits_full, atol=1e-4)
    # The augmented copy is a different image set; the original copy is not augmented.
    assert np.abs(fast.train_copies[1][-1] - fast.train_copies[0][-1]).max() > 1e-3
    assert isinstance(model.get_layer(BASE), keras.Model)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_fast_path_training_trains_the_full_model(tiny_dataset, tmp_path, mode):
    from edgetune.train import train_run

    run = train_run(tiny_train_config(tiny_dataset, tmp_path / "run", cache_features=mode, epochs=2, fine_tune_epochs=1))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stage1"]["fast_path"] and metrics["stage2"]["fast_path"]
    history = json.loads((run / "history.json").read_text())
    assert len(history["val_accuracy"]) == 3
    # The last cached-feature validation loss is the full model's evaluation: the head trained in place.
    assert history["val_loss"][-1] == pytest.approx(metrics["stage2"]["val"]["loss"], abs=1e-3)
    assert not (run / "feature_cache").exists()
    assert read_metadata(run).labels == ["cats", "dogs"]


def test_strategy_flags_and_tf_config(tmp_path):
    from edgetune import UserError
    from edgetune.train.distribute import tf_config_from_workers

    cfg = tf_config_from_workers("127.0.0.1:2222,127.0.0.1:2223", 1)
    assert cfg == {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(UserError, match="--worker-index"):
        tf_config_from_workers("127.0.0.1:2222,127.0.0.1:2223", 2)
    with pytest.raises(UserError, match="host:port"):
        tf_config_from_workers("localhost", 0)


def test_multiworker_needs_a_cluster(tiny_dataset, tmp_path, monkeypatch, capsys):
    from edgetune.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    rc = main(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "r"), "--strategy", "multiworker",
               "--weights", pretrained_weights_or_none(), "--image-size", "48", "--verbose", "0"])
    assert rc == 2 and "TF_CONFIG" in capsys.readouterr().err


def _worker_cmd(data: Path, out: Path, workers: str, index: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgetune.cli", "train", "--data", str(data), "--out", str(out), "--strategy", "multiworker",
            "--workers", workers, "--worker-index", str(index), "--weights", pretrained_weights_or_none(), "--image-size", "48",
            "--batch-size", "8", "--verbose", "0", *extra]


def _two_worker_data(tmp_path: Path) -> tuple[Path, str, dict]:
    data = tmp_path / "data"
    make_image_tree(data / "train", per_class=16, seed=1)
    make_image_tree(data / "validation", per_class=10, seed=2)
    workers = ",".join(f"127.0.0.1:{_free_port()}" for _ in range(2))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"} | {"CUDA_VISIBLE_DEVICES": ""}
    return data, workers, env


def _digests(errs: list[str]) -> list[str]:
    return [re.search(r"finished; weights sha256 ([0-9a-f]{64})", e).group(1) for e in errs]


def test_two_workers_on_localhost_train_identical_replicas(tmp_path):
    data, workers, env = _two_worker_data(tmp_path)
    procs = [subprocess.Popen(_worker_cmd(data, tmp_path / "run", workers, i, "--epochs", "1", "--fine-tune-epochs", "1"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    run = tmp_path / "run"
    assert read_metadata(run).labels == ["cats", "dogs"]
    assert json.loads((run / "config.json").read_text())["replicas"] == 2
    chief, worker = _digests([e for _, e in outs])
    assert chief == worker == json.loads((run / "metrics.json").read_text())["weights_sha256"]
    assert not any(tmp_path.glob("run.partial")) and not (run / "workers").exists()


def test_a_killed_worker_restarts_from_its_stable_checkpoint_and_the_run_completes(tmp_path):
    """Kill worker 1 after its first epoch; the chief's collectives fail too (TF's design), so both restart
    with --resume, each from its own checkpoint in run.partial/ (worker 1's in run.partial/workers/1/)."""
    import signal
    import time

    data, workers, env = _two_worker_data(tmp_path)
    flags = ("--epochs", "4", "--fine-tune-epochs", "0", "--patience", "0")
    procs = [subprocess.Popen(_worker_cmd(data, tmp_path / "run", workers, i, *flags), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    state = tmp_path / "run.partial" / "workers" / "1" / "checkpoint" / "state.json"
    deadline = time.monotonic() + 600
    while not (state.is_file() and json.loads(state.read_text())["epochs_done"] >= 1):
        assert time.monotonic() < deadline and procs[1].poll() is None, "worker 1 never checkpointed an epoch"
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    try:  # the chief fails once its peer is gone (or hangs in a collective: then it is stopped as well)
        procs[0].communicate(timeout=180)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        procs[0].communicate()
    assert not (tmp_path / "run").exists()
    done_before = json.loads(state.read_text())["epochs_done"]
    workers = ",".join(f"127.0.0.1:{_free_port()}" for _ in range(2))  # the old ports may linger in TIME_WAIT
    procs = [subprocess.Popen(_worker_cmd(data, tmp_path / "run", workers, i, *flags, "--resume"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(err[-2000:] for _, err in outs)
    chief, worker = _digests([e for _, e in outs])
    assert chief == worker  # the restarted worker rejoined: identical replicas at the end
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["loss"]) == 4 and done_before >= 1
    assert not (tmp_path / "run.partial").exists()


def test_mixed_precision_keeps_float32_logits_and_restores_the_policy(tiny_dataset, tmp_path):
    import keras

    from edgetune.train import load_model, train_run

    run = train_run(tiny_train_config(tiny_dataset, tmp_path / "run", mixed_precision=True, fine_tune_epochs=0))
    assert keras.mixed_precision.global_policy().name == "float32"
    model = load_model(run)
    assert model.get_layer("logits").dtype_policy.compute_dtype == "float32"
    assert model.get_layer("mobilenetv2_base").layers[1].dtype_policy.compute_dtype == "float16"


def _gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


@pytest.mark.gpu
def test_training_uses_the_gpu_when_present(tiny_dataset, tmp_path):
    """The training steps ran on the GPU: its allocator's peak grew by more than the model's weights."""
    if not _gpus():
        pytest.skip("no GPU on this machine")
    import time

    import tensorflow as tf

    from edgetune.train import train_run

    tf.config.experimental.reset_memory_stats("GPU:0")
    t0 = time.perf_counter()
    # 96 px, batch 32, no feature cache: the fit's activations outweigh the model's weights several times.
    run = train_run(tiny_train_config(tiny_dataset, tmp_path / "run", mixed_precision=True, cache_features="off",
                                      image_size=96, batch_size=32))
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    print(f"GPU tiny run (1+1 epochs, mixed precision): {time.perf_counter() - t0:.1f} s, GPU peak {peak / 2**20:.0f} MiB")
    from edgetune.train import load_model

    weights_bytes = sum(np.asarray(w).nbytes for w in load_model(run).weights)
    # Variables are placed on the GPU even when the steps are not: only the steps' tensors can double the peak.
    assert peak > 2 * weights_bytes, (peak, weights_bytes)
    assert json.loads((run / "metrics.json").read_text())["stage2"]["epochs_run"] == 1
