"""`train_run`: the tutorial's two-stage recipe, producing a complete, self-describing run dir.

Everything is written into `RUN_DIR.partial/` and renamed to `RUN_DIR` only when the run is
complete, so a failed or interrupted run never looks finished. `--resume` continues from the last
epoch checkpointed in `RUN_DIR.partial/checkpoint/`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from edgetune import UserError, __version__
from edgetune._config import config_to_dict
from edgetune.contract import ModelMetadata, Preprocessing, TensorSpec, sha256_file, write_json_atomic, write_metadata
from edgetune.stats import accuracy_summary
from edgetune.train import distribute
from edgetune.train.config import TrainConfig
from edgetune.train.data import make_dataset
from edgetune.train.features import FastPath, fit_stage1, fit_stage2, use_fast_path
from edgetune.train.model import build_model, deployment_model, freeze_for_stage
from edgetune.train.splits import Splits, make_splits

CHECKPOINT = "checkpoint"


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: save the compiled model and the history so far (what --resume needs)."""

    def __init__(self, folder: Path, stage: int, history: dict, target: keras.Model, enabled: bool = True):
        super().__init__()
        # `target` is the full model: the fast path fits a head or top sub-model that shares its layers.
        self.folder, self.stage, self.history, self.target, self.enabled = folder, stage, history, target, enabled

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "model.tmp.keras"
        self.target.save(tmp)
        os.replace(tmp, self.folder / "model.keras")
        write_json_atomic(self.folder / "state.json", {"stage": self.stage, "epochs_done": epoch + 1, "history": self.history})


def _metrics(num_classes: int) -> list:
    if num_classes == 2:
        return [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]  # logits: 0 is p=0.5
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def _loss(num_classes: int):
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _optimizer(stage: int, cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """The tutorial's optimizers: Adam for the head, RMSprop at a tenth of the rate for fine-tuning."""
    if stage == 1:
        return keras.optimizers.Adam(learning_rate=cfg.learning_rate)
    return keras.optimizers.RMSprop(learning_rate=cfg.learning_rate / 10)


def _compile(model: keras.Model, stage: int, cfg: TrainConfig, num_classes: int, loop=None) -> None:
    # compile() alone is fine under every strategy (only fit's symbolic build breaks multi-worker).
    model.compile(optimizer=_optimizer(stage, cfg), loss=_loss(num_classes), metrics=_metrics(num_classes), jit_compile=cfg.xla)
    if loop is not None:
        loop.compile(model.optimizer)


def _evaluate(model: keras.Model, ds: tf.data.Dataset, n: int, loop=None) -> dict:
    """Loss and accuracy on `ds` (n images), with the accuracy's count and 95% interval."""
    if loop is not None:
        out = loop.evaluate(ds)
    else:
        loss, acc = model.evaluate(ds, verbose=0)
        out = {"loss": float(loss), "accuracy": float(acc)}
    return out | accuracy_summary(out["accuracy"], n)


def _prepare_run_dir(cfg: TrainConfig, chief: bool) -> tuple[Path, Path, dict | None]:
    """Return (final dir, partial dir, resume state or None)."""
    out = Path(cfg.out).resolve()
    partial = out.with_name(out.name + ".partial")
    if (out / "metadata.json").exists() and not cfg.force:
        raise UserError(f"{out} already holds a complete run; pass --force to replace it or choose another --out")
    state = None
    if cfg.resume:
        state_file = partial / CHECKPOINT / "state.json"
        if not state_file.is_file():
            raise UserError(f"nothing to resume: {state_file} does not exist (start without --resume)")
        state = json.loads(state_file.read_text())
    elif chief and partial.exists():
        shutil.rmtree(partial)  # a stale, failed attempt: never mixed into a new run
    if chief:
        partial.mkdir(parents=True, exist_ok=True)
    return out, partial, state


def _metadata(cfg: TrainConfig, splits: Splits, units: int, model_file: Path, weights_source: str, metrics: dict) -> ModelMetadata:
    size = cfg.image_size
    weights_sha = sha256_file(weights_source) if Path(weights_source).is_file() else None
    return ModelMetadata(
        labels=list(splits.classes),
        preprocessing=Preprocessing(size=(size, size)),
        input=TensorSpec(shape=[1, size, size, 3], dtype="float32"),
        output=TensorSpec(shape=[1, units], dtype="float32"),
        output_kind="binary_logit" if units == 1 else "softmax_logits",
        preset="keras",
        source={
            "model": model_file.name,
            "sha256": sha256_file(model_file),
            "weights": weights_source,
            "weights_sha256": weights_sha,
            "data_root": str(splits.root),
            "architecture": f"MobileNetV2 alpha={cfg.alpha}, include_top=False, GAP, Dropout {cfg.dropout}, Dense {units}",
        },
        versions={"edgetune": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                  "numpy": np.__version__, "python": sys.version.split()[0]},
        extra={"metrics": metrics},
    )


def train_run(cfg: TrainConfig) -> Path:
    """Train per `cfg` and return the complete run dir.

    Raises:
        UserError: bad data, weights or flags (one clear message).
    """
    cfg.validate()
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _train_run(cfg)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)  # a global: never leak it to the caller


def _train_run(cfg: TrainConfig) -> Path:
    strategy, chief = distribute.make_strategy(cfg)
    out, partial, state = _prepare_run_dir(cfg, chief)
    # Non-chief workers write their (identical) files to a scratch dir; only the chief's land in out.
    work = partial if chief else Path(distribute.scratch_dir(out))
    work.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    data = Path(cfg.data) if cfg.data else _default_data()
    splits = make_splits(data, cfg.holdout_fraction, cfg.seed, progress=cfg.verbose > 0)
    if splits.skipped:
        print(f"skipped {len(splits.skipped)} unreadable file(s); see the warning above", file=sys.stderr)
    n = len(splits.classes)
    splits.write(work / "splits")
    (work / "labels.txt").write_text("".join(f"{c}\n" for c in splits.classes))
    write_json_atomic(work / "config.json", config_to_dict(cfg) | {"data": str(data), "replicas": strategy.num_replicas_in_sync})
    size = (cfg.image_size, cfg.image_size)
    train_ds = make_dataset(splits.train, size, cfg.batch_size, n, shuffle=True, seed=cfg.seed)
    val_ds = make_dataset(splits.val, size, cfg.batch_size, n)
    test_ds = make_dataset(splits.test, size, cfg.batch_size, n)

    history: dict = state["history"] if state else {}
    metrics: dict = json.loads((work / "metrics.partial.json").read_text()) if state and (work / "metrics.partial.json").exists() else {}
    done = state["epochs_done"] if state else 0
    ckpt_dir = work / CHECKPOINT
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(work / "tb"), write_graph=False, update_freq="epoch")
    loop = None
    if distribute.is_multiworker(strategy):
        train_ds, val_ds, test_ds = (distribute.shard_by_data(d) for d in (train_ds, val_ds, test_ds))
    with strategy.scope():
        model, weights_source = build_model(n, size, cfg.weights, cfg.alpha, cfg.dropout, cfg.rotation, cfg.flip, cfg.seed)
        if cfg.weights == "none":
            from edgetune.train.model import recalibrate_batchnorm

            recalibrate_batchnorm(model, train_ds)
        if state:
            model = keras.models.load_model(ckpt_dir / "model.keras")
    if distribute.is_multiworker(strategy):
        from edgetune.train.multiworker import DistributedLoop

        loop = DistributedLoop(model, strategy, n, work / "backup")

    total = cfg.epochs + cfg.fine_tune_epochs
    fast = None
    if done < cfg.epochs:  # stage 1: frozen base, head only
        with strategy.scope():
            if not state:
                freeze_for_stage(model, 1)
                _compile(model, 1, cfg, n, loop)
        if "initial" not in metrics:
            metrics["initial"] = {"val": _evaluate(model, val_ds, len(splits.val), loop)}
            print(f"before training: val loss {metrics['initial']['val']['loss']:.4f}, accuracy {metrics['initial']['val']['accuracy']:.4f}", file=sys.stderr)
        t0 = time.perf_counter()
        fast = _fast_path(model, cfg, splits, size, strategy, work)
        ckpt = EpochCheckpoint(ckpt_dir, 1, history, model, enabled=chief)
        if loop is not None:
            loop.fit(train_ds, val_ds, done, cfg.epochs, [ckpt, tensorboard], stage=1)
        else:
            fit_stage1(model, cfg, splits, train_ds, val_ds, initial_epoch=done, callbacks=[ckpt, tensorboard], strategy=strategy, fast=fast)
        metrics["stage1"] = {"epochs": cfg.epochs, "seconds": round(time.perf_counter() - t0, 1), "fast_path": fast is not None,
                             "val": _evaluate(model, val_ds, len(splits.val), loop), "test": _evaluate(model, test_ds, len(splits.test), loop)}
        write_json_atomic(work / "metrics.partial.json", metrics)
        done = cfg.epochs
        state = None
    if cfg.fine_tune_epochs > 0 and done < total:  # stage 2: unfreeze the top of the base
        with strategy.scope():
            if not state or state.get("stage") != 2:
                freeze_for_stage(model, 2, cfg.fine_tune_at)
                _compile(model, 2, cfg, n, loop)
        t0 = time.perf_counter()
        if fast is None:
            fast = _fast_path(model, cfg, splits, size, strategy, work)
        ckpt = EpochCheckpoint(ckpt_dir, 2, history, model, enabled=chief)
        if loop is not None:
            loop.fit(train_ds, val_ds, done, total, [ckpt, tensorboard], stage=2)
        else:
            fit_stage2(model, cfg, train_ds, val_ds, done, [ckpt, tensorboard], fast)
        metrics["stage2"] = {"epochs": cfg.fine_tune_epochs, "seconds": round(time.perf_counter() - t0, 1), "fast_path": bool(fast and fast.stage2),
                             "val": _evaluate(model, val_ds, len(splits.val), loop), "test": _evaluate(model, test_ds, len(splits.test), loop)}
    del fast  # free the cached activations before saving and exporting
    shutil.rmtree(work / "feature_cache", ignore_errors=True)
    final = metrics.get("stage2") or metrics["stage1"]
    metrics["final"] = {"val": final["val"], "test": final["test"]}

    model_file = work / "model.keras"
    model.save(model_file)
    deploy = deployment_model(model)
    deploy.export(str(work / "saved_model"), verbose=False)
    history["stage1_epochs"] = cfg.epochs
    write_json_atomic(work / "history.json", history)
    from edgetune.train.report import write_reports

    metrics["confusion"] = write_reports(work, deploy, splits, test_ds, history, cfg.epochs)
    write_json_atomic(work / "metrics.json", metrics)
    write_metadata(work / "metadata.json", _metadata(cfg, splits, model.output_shape[-1], model_file, weights_source, metrics))
    shutil.rmtree(work / CHECKPOINT, ignore_errors=True)
    shutil.rmtree(work / "backup", ignore_errors=True)  # multi-worker restart state: done with
    (work / "metrics.partial.json").unlink(missing_ok=True)
    if not chief:
        # Every worker runs the same steps (collective ops need all of them); only the chief's land.
        print(f"worker (not chief) finished; its copy of the run is in {work}", file=sys.stderr)
        return work
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return out


def _fast_path(model, cfg, splits, size, strategy, work: Path):
    """Build the stage 1/2 feature caches when the fast path applies (see edgetune.train.features)."""
    if not use_fast_path(cfg, strategy):
        return None
    return FastPath(model, cfg, splits, size, folder=work / "feature_cache" if cfg.cache_features == "disk" else None)


def _default_data() -> Path:
    from edgetune.train.datasets import fetch

    return fetch("cats-vs-dogs")
