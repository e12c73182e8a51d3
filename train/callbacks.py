"""Callbacks every training stage runs: checkpoint for --resume, early stopping with best weights, a finite loss.

All three act on the full model (`target`), even when the fast path fits a head or top sub-model
that shares its layers: the weights saved and restored are always the deployable model's.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from edgetune import UserError
from edgetune.contract import write_json_atomic


BEST_FILE = "best.npz"


class NonFiniteLoss(UserError):
    """Training produced a NaN or infinite loss: the run is stopped and never written as complete."""


class FiniteLoss(keras.callbacks.Callback):
    """Stop at the first batch whose loss is not finite (Keras' TerminateOnNaN only ends the epoch quietly)."""

    def __init__(self, stage: int, learning_rate: float):
        super().__init__()
        self.stage, self.learning_rate, self.epoch = stage, learning_rate, 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        value = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"training diverged: stage {self.stage} loss became {value} at epoch {self.epoch + 1}, step {batch + 1} "
                f"(learning rate {self.learning_rate:g}); nothing was written as a complete run: lower the learning rate")


class BestWeights(keras.callbacks.Callback):
    """Early stopping on validation loss: stop after `patience` epochs without a new low, restore the best weights.

    patience 0 keeps every epoch and the last weights (the tutorial's behaviour). The best weights are
    kept in memory and, for --resume, written by `EpochCheckpoint` to `folder/best.npz` (one array per weight).
    """

    def __init__(self, target: keras.Model, patience: int, folder: Path, state: dict | None = None):
        super().__init__()
        self.target, self.patience, self.folder = target, patience, Path(folder)
        state = state or {}
        self.best_loss = state.get("best_loss", math.inf)
        self.best_epoch = state.get("best_epoch")
        self.wait = state.get("wait", 0)
        self.improved = False
        self.weights = None
        if self.best_epoch is not None and (self.folder / BEST_FILE).is_file():
            with np.load(self.folder / BEST_FILE) as f:
                self.weights = [f[f"w{i}"] for i in range(len(f.files))]
        self.stopped_early = False

    def write(self) -> None:
        """Write the best weights so far to `folder/best.npz` (atomically), for --resume."""
        if self.weights is None:
            return
        tmp = self.folder / "best.tmp.npz"
        np.savez(tmp, **{f"w{i}": w for i, w in enumerate(self.weights)})
        os.replace(tmp, self.folder / BEST_FILE)

    def state(self) -> dict:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "wait": self.wait}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.patience <= 0:
            return
        loss = float((logs or {}).get("val_loss", math.inf))
        self.improved = loss < self.best_loss
        if self.improved:
            self.best_loss, self.best_epoch, self.wait = loss, epoch + 1, 0
            self.weights = self.target.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_early = True
                self.model.stop_training = True

    def restore(self) -> None:
        """Put the best epoch's weights back (call at the end of the stage)."""
        if self.patience > 0 and self.weights is not None:
            self.target.set_weights(self.weights)


class EpochCheckpoint(keras.callbacks.Callback):
    """After an epoch: save the compiled model and the history so far (what --resume needs).

    Saving the full model takes seconds (1-6 s here, more than a head epoch on cached features), so
    inside a stage a checkpoint is written at most once per `every` seconds: always after the stage's
    first epoch and when the stage stops early (its end is saved by the trainer). --resume then
    repeats at most `every` seconds of epochs; every=0 saves after every epoch.
    """

    def __init__(self, folder: Path, stage: int, history: dict, target: keras.Model, enabled: bool = True,
                 best: BestWeights | None = None, every: float = 0.0):
        super().__init__()
        self.folder, self.stage, self.history, self.target, self.enabled, self.best = folder, stage, history, target, enabled, best
        self.every, self.last_save, self.best_written = every, None, None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        if not self.enabled:
            return
        stopping = bool(getattr(self.model, "stop_training", False))
        if self.last_save is not None and not stopping and time.monotonic() - self.last_save < self.every:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "model.tmp.keras"
        self.target.save(tmp)
        os.replace(tmp, self.folder / "model.keras")
        state = {"stage": self.stage, "epochs_done": epoch + 1, "history": self.history}
        if self.best is not None:
            if self.best.best_epoch != self.best_written:  # a new best since the last checkpoint
                self.best.write()
                self.best_written = self.best.best_epoch
            state["best"] = self.best.state()
        write_json_atomic(self.folder / "state.json", state)
        self.last_save = time.monotonic()
