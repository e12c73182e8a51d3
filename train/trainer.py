"""`train_run`: two-stage MobileNetV2 fine-tuning, producing a complete, self-describing run dir.

A run is a few named steps: `_setup` (strategy, run dir, splits, datasets), `_build` (the model, fresh
or from the checkpoint), `_run_stage` for stage 1 (head on the frozen base) and stage 2 (the top of the
base unfrozen), and `_finish` (model files, reports, metadata, then the run dir swapped into place).
Everything is written into `RUN_DIR.partial/` and moved to `RUN_DIR` only when complete, so a failed or
interrupted run never looks finished; `--resume` continues from the last epoch checkpointed there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from edgetune import __version__
from edgetune._config import config_to_dict
from edgetune.contract import ModelMetadata, TensorSpec, sha256_file, write_json_atomic, write_metadata
from edgetune.stats import accuracy_summary
from edgetune.train import distribute, recipe, rundir
from edgetune.train.callbacks import BestWeights, EpochCheckpoint, FiniteLoss
from edgetune.train.config import TrainConfig
from edgetune.train.data import make_dataset
from edgetune.train.features import FastPath, fit_stage, use_fast_path
from edgetune.train.metrics import classification_report
from edgetune.train.model import build_model, deployment_model, export_model, freeze_for_stage
from edgetune.train.splits import Splits, make_splits


@dataclass
class _Run:
    """What the steps of one training run share."""

    cfg: TrainConfig
    strategy: tf.distribute.Strategy
    chief: bool
    dirs: rundir.RunDirs
    splits: Splits
    datasets: dict[str, tf.data.Dataset]
    history: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    done: int = 0  # epochs completed, counted across both stages
    model: keras.Model | None = None
    weights_source: str = ""
    loop: object | None = None  # the multi-worker training loop, when one runs
    fast: FastPath | None = None

    @property
    def n(self) -> int:
        return len(self.splits.classes)

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.splits.train) // self.cfg.batch_size)


def train_run(cfg: TrainConfig) -> Path:
    """Train per `cfg` (its recipe fills the unset fields) and return the complete run dir.

    Raises:
        UserError: bad data, weights, flags or output folder, or a loss that became NaN (one clear message).
    """
    cfg = cfg.resolve()
    cfg.validate()
    previous_policy = keras.mixed_precision.global_policy()
    try:
        run = _setup(cfg)
        _build(run)
        if run.done < cfg.epochs:
            _run_stage(run, 1)
        if cfg.fine_tune_epochs > 0 and run.done < cfg.epochs + cfg.fine_tune_epochs:
            _run_stage(run, 2)
        return _finish(run)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)  # a global: never leak it to the caller


def _setup(cfg: TrainConfig) -> _Run:
    """Strategy, run dir (fresh or resumed), splits, config.json and the three datasets."""
    strategy, chief = distribute.make_strategy(cfg)
    data = Path(cfg.data) if cfg.data else _default_data()
    dirs = rundir.prepare(cfg, data, chief, distribute.worker_index(cfg))
    keras.utils.set_random_seed(cfg.seed)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    splits = make_splits(data, cfg.holdout_fraction, cfg.seed, progress=cfg.verbose > 0)
    if splits.skipped:
        print(f"skipped {len(splits.skipped)} unreadable file(s); see the warning above", file=sys.stderr)
    if chief:
        splits.write(dirs.work / "splits")
        (dirs.work / "labels.txt").write_text("".join(f"{c}\n" for c in splits.classes))
    write_json_atomic(dirs.work / "config.json", config_to_dict(cfg) | {"data": str(data), "replicas": strategy.num_replicas_in_sync})
    size, n = (cfg.image_size, cfg.image_size), len(splits.classes)
    pre = cfg.preprocessing()
    datasets = {"train": make_dataset(splits.train, size, cfg.batch_size, n, shuffle=True, seed=cfg.seed, preprocessing=pre),
                "val": make_dataset(splits.val, size, cfg.batch_size, n, preprocessing=pre),
                "test": make_dataset(splits.test, size, cfg.batch_size, n, preprocessing=pre)}
    if distribute.is_multiworker(strategy):
        datasets = {k: distribute.shard_by_data(d) for k, d in datasets.items()}
    run = _Run(cfg, strategy, chief, dirs, splits, datasets)
    state = dirs.state
    if state:
        run.history = state["history"]
        partial_metrics = dirs.work / "metrics.partial.json"
        run.metrics = json.loads(partial_metrics.read_text()) if partial_metrics.exists() else {}
        run.done = state["epochs_done"]
        if "stage1" in run.metrics:  # stage 1 ended (maybe early): what is left is stage 2
            run.done = max(run.done, cfg.epochs)
    return run


def _build(run: _Run) -> None:
    """The model under the strategy's scope: fresh, or the checkpointed one when resuming."""
    cfg = run.cfg
    size = (cfg.image_size, cfg.image_size)
    with run.strategy.scope():
        run.model, run.weights_source = build_model(run.n, size, cfg.weights, cfg.alpha, cfg.dropout, cfg.rotation, cfg.flip, cfg.seed,
                                                    cfg.zoom)
        if cfg.weights == "none":
            from edgetune.train.model import recalibrate_batchnorm

            recalibrate_batchnorm(run.model, run.datasets["train"])
        if run.dirs.state:
            run.model = keras.models.load_model(run.dirs.work / rundir.CHECKPOINT / "model.keras")
    if distribute.is_multiworker(run.strategy):
        from edgetune.train.multiworker import DistributedLoop

        run.loop = DistributedLoop(run.model, run.strategy, run.n, run.dirs.backup,
                                   recipe.class_weights(_labels(run.splits.train), run.n, cfg.class_weight), cfg.label_smoothing)


def _compile(run: _Run, stage: int) -> None:
    cfg, model = run.cfg, run.model
    # compile() alone is fine under every strategy (only fit's symbolic build breaks multi-worker).
    model.compile(optimizer=recipe.optimizer(stage, cfg, run.steps_per_epoch), loss=recipe.loss(run.n, cfg.label_smoothing),
                  metrics=recipe.metrics(run.n), jit_compile=cfg.xla)
    if run.loop is not None:
        run.loop.compile(model.optimizer)


def _tune(run: _Run) -> None:
    """--tune: search the head's settings once (a resumed run reuses the search's choice) and train with them."""
    from edgetune.train.tune import apply_choice, require_fast_path, tune_head

    if "tune" not in run.metrics:
        if run.fast is None:
            run.fast = _fast_path(run)
        require_fast_path(run.fast)
        with run.strategy.scope():
            freeze_for_stage(run.model, 1, run.cfg.fine_tune_at)
        weights = recipe.class_weights(_labels(run.splits.train), run.n, run.cfg.class_weight)
        run.metrics["tune"] = tune_head(run.fast, run.cfg, run.steps_per_epoch, weights)
        write_json_atomic(run.dirs.work / "metrics.partial.json", run.metrics)  # --resume keeps this choice
    run.cfg = apply_choice(run.cfg, run.metrics["tune"])


def _run_stage(run: _Run, stage: int) -> None:
    """One stage: freeze and compile (unless resuming inside it), fit with its callbacks, restore the best epoch."""
    if run.cfg.tune:
        _tune(run)
    cfg, state = run.cfg, run.dirs.state
    last = cfg.epochs if stage == 1 else cfg.epochs + cfg.fine_tune_epochs
    resuming = bool(state) and state.get("stage") == stage and not state.get("stage_done")
    with run.strategy.scope():
        if not resuming:
            freeze_for_stage(run.model, stage, cfg.fine_tune_at)
            _compile(run, stage)
        elif run.loop is not None:  # the checkpointed model comes compiled; the loop still needs its optimizer
            run.loop.compile(run.model.optimizer)
    if stage == 1 and "initial" not in run.metrics:
        run.metrics["initial"] = {"val": _evaluate(run, "val")}
        print(f"before training: val loss {run.metrics['initial']['val']['loss']:.4f}, "
              f"accuracy {run.metrics['initial']['val']['accuracy']:.4f}", file=sys.stderr)
    t0 = time.perf_counter()
    if run.fast is None:
        run.fast = _fast_path(run)
    ckpt_dir = run.dirs.work / rundir.CHECKPOINT
    best = BestWeights(run.model, cfg.patience, ckpt_dir, state.get("best") if resuming else None)
    rate = cfg.learning_rate if stage == 1 else cfg.fine_tune_learning_rate
    # multi-worker: every epoch (a time-based choice could differ between workers)
    every = cfg.checkpoint_seconds if run.loop is None else 0.0
    callbacks = [FiniteLoss(stage, rate), best, EpochCheckpoint(ckpt_dir, stage, run.history, run.model, best=best, every=every)]
    if run.chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.dirs.work / "tb"), write_graph=False, update_freq="epoch"))
    weights = recipe.class_weights(_labels(run.splits.train), run.n, cfg.class_weight)
    if run.loop is not None:
        run.loop.fit(run.datasets["train"], run.datasets["val"], run.done, last, callbacks, stage=stage)
    else:
        fit_stage(stage, run.model, cfg, run.datasets["train"], run.datasets["val"], run.done, last, callbacks, run.fast, weights)
    best.restore()
    epochs_run = len(run.history.get("loss", [])) - (run.metrics.get("stage1", {}).get("epochs_run", 0) if stage == 2 else 0)
    run.metrics[f"stage{stage}"] = {
        "epochs": last - (0 if stage == 1 else cfg.epochs), "epochs_run": epochs_run, "best_epoch": best.best_epoch,
        "stopped_early": best.stopped_early, "seconds": round(time.perf_counter() - t0, 1),
        "fast_path": bool(run.fast and (stage == 1 or run.fast.stage2)),
        "val": _evaluate(run, "val"), "test": _evaluate(run, "test")}
    _end_of_stage_checkpoint(run, stage, last)
    run.done, run.dirs.state = last, None


def _end_of_stage_checkpoint(run: _Run, stage: int, last: int) -> None:
    """After a stage: its metrics and the (restored best) model, so --resume starts the next stage from them."""
    write_json_atomic(run.dirs.work / "metrics.partial.json", run.metrics)
    ckpt_dir = run.dirs.work / rundir.CHECKPOINT
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run.model.save(ckpt_dir / "model.tmp.keras")
    (ckpt_dir / "model.tmp.keras").replace(ckpt_dir / "model.keras")
    write_json_atomic(ckpt_dir / "state.json", {"stage": stage, "epochs_done": last, "stage_done": True, "history": run.history})


def _labels(samples) -> np.ndarray:
    return np.array([s.label for s in samples], int)


def _predict(model: keras.Model, ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of a whole dataset, batch by batch."""
    logits, labels = [], []
    for x, y in ds:
        logits.append(np.asarray(model.predict_on_batch(x), np.float32))
        labels.append(np.asarray(y).reshape(len(logits[-1]), -1))
    return np.concatenate(logits), np.concatenate(labels)


def _evaluate(run: _Run, split: str) -> dict:
    """Loss, accuracy with its count and 95% interval, macro F1, balanced accuracy, per-class P/R/F1 on a split."""
    ds, n = run.datasets[split], len(getattr(run.splits, split))
    if run.loop is not None:  # multi-worker: loss and accuracy through the distributed loop
        out = run.loop.evaluate(ds)
        return out | accuracy_summary(out["accuracy"], n)
    logits, labels = _predict(run.model, ds)
    loss_fn = recipe.loss(run.n, run.cfg.label_smoothing)
    y = labels if run.n == 2 else labels[:, 0].astype(int)
    loss = float(loss_fn(y, logits))
    preds = (logits[:, 0] > 0).astype(int) if run.n == 2 else logits.argmax(axis=1)
    report = classification_report(labels[:, 0].astype(int), preds, run.splits.classes)
    report.pop("matrix")
    return {"loss": loss} | report


def _finish(run: _Run) -> Path:
    """Save, export, write reports and metadata, then move the run dir into place (chief) or clean up (others)."""
    cfg, model = run.cfg, run.model
    del run.fast  # free the cached activations before saving and exporting
    shutil.rmtree(run.dirs.work / "feature_cache", ignore_errors=True)
    final = run.metrics.get("stage2") or run.metrics["stage1"]
    run.metrics["final"] = {"val": final["val"], "test": final["test"]}
    # Every worker runs the same steps (collective ops may need all of them); only the chief's files land.
    work = run.dirs.work if run.chief else Path(tempfile.mkdtemp(prefix="edgetune-worker-"))
    model_file = work / "model.keras"
    model.save(model_file)
    deploy = deployment_model(model)
    export_model(model).export(str(work / "saved_model"), verbose=False)  # ends in probabilities, like every export
    run.history["stage1_epochs"] = run.metrics["stage1"].get("epochs_run", cfg.epochs)
    write_json_atomic(work / "history.json", run.history)
    from edgetune.train.report import write_reports

    run.metrics["confusion"] = write_reports(work, deploy, run.splits, run.datasets["test"], run.history, run.history["stage1_epochs"])
    run.metrics["weights_sha256"] = digest = weights_digest(model)
    write_json_atomic(work / "metrics.json", run.metrics)
    write_metadata(work / "metadata.json", _metadata(cfg, run.splits, model.output_shape[-1], model_file, run.weights_source, run.metrics))
    if run.loop is not None:
        run.loop.barrier()  # every worker is past its last write into NAME.partial/workers/
    if not run.chief:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run.dirs.work, ignore_errors=True)
        print(f"worker (not chief) finished; weights sha256 {digest}", file=sys.stderr)
        return run.dirs.out
    print(f"chief finished; weights sha256 {digest}", file=sys.stderr)
    return rundir.finish(run.dirs)


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight's bytes, in order: equal digests mean identical replicas."""
    h = hashlib.sha256()
    for w in model.weights:
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return h.hexdigest()


def _metadata(cfg: TrainConfig, splits: Splits, units: int, model_file: Path, weights_source: str, metrics: dict) -> ModelMetadata:
    size = cfg.image_size
    weights_sha = sha256_file(weights_source) if Path(weights_source).is_file() else None
    return ModelMetadata(
        labels=list(splits.classes),
        preprocessing=cfg.preprocessing(),
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
            "alpha": float(cfg.alpha),  # read by convert; "architecture" below is for people
            "architecture": f"MobileNetV2 alpha={cfg.alpha}, include_top=False, GAP, Dropout {cfg.dropout}, Dense {units}",
            "recipe": cfg.recipe,
        },
        versions={"edgetune": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                  "numpy": np.__version__, "python": sys.version.split()[0]},
        extra={"metrics": metrics},
    )


def _fast_path(run: _Run) -> FastPath | None:
    """Build the stage 1/2 feature caches when the fast path applies (see edgetune.train.features)."""
    cfg = run.cfg
    if not use_fast_path(cfg, run.strategy):
        return None
    folder = run.dirs.work / "feature_cache" if cfg.cache_features == "disk" else None
    return FastPath(run.model, cfg, run.splits, (cfg.image_size, cfg.image_size), folder=folder)


def _default_data() -> Path:
    from edgetune.train.datasets import fetch

    return fetch("cats-vs-dogs")
