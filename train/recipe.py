"""What each stage is compiled and fit with: loss, metrics, optimizer and schedule, class weights.

The values come from the resolved `TrainConfig` (see `edgetune.train.config.RECIPES`); the tutorial
recipe gives exactly the tutorial's objects (plain cross entropy, Adam, then RMSprop at a constant rate).
"""

from __future__ import annotations

import keras
import numpy as np


def metrics(num_classes: int) -> list:
    """Fresh accuracy metric objects (one set per compiled model: Keras metrics hold state)."""
    if num_classes == 2:
        return [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")]  # logits: 0 is p=0.5
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


@keras.saving.register_keras_serializable(package="edgetune")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Softmax cross entropy on integer labels with label smoothing (Keras' sparse loss has none).

    The target is (1 - s) on the true class plus s / C on every class, computed from log-softmax
    directly so that no one-hot tensor of the labels is built.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "sparse_smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        logp = keras.ops.log_softmax(y_pred, axis=-1)
        y = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        true_term = -keras.ops.take_along_axis(logp, keras.ops.expand_dims(y, -1), axis=-1)[:, 0]
        return (1.0 - self.label_smoothing) * true_term - self.label_smoothing * keras.ops.mean(logp, axis=-1)

    def get_config(self) -> dict:
        return super().get_config() | {"label_smoothing": self.label_smoothing}


def loss(num_classes: int, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Cross entropy on logits: binary for two classes (one logit), sparse softmax for more."""
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing)
    if label_smoothing > 0:
        return SparseSmoothedCrossentropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def learning_rate(rate: float, schedule: str, epochs: int, steps_per_epoch: int, warmup_epochs: float):
    """A constant rate, or linear warm-up to `rate` then cosine decay to 0 over the stage's steps."""
    if schedule == "constant":
        return rate
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(warmup_epochs * steps_per_epoch)))
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(rate, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup, warmup_target=rate, warmup_steps=warmup)


def optimizer(stage: int, cfg, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Stage 1: Adam at learning_rate. Stage 2: fine_tune_optimizer at fine_tune_learning_rate.

    The tutorial's stage 2 is RMSprop at learning_rate / 10 (what `resolve()` gives it).
    """
    if stage == 1:
        lr = learning_rate(cfg.learning_rate, cfg.schedule, cfg.epochs, steps_per_epoch, cfg.warmup_epochs)
        return keras.optimizers.Adam(learning_rate=lr)
    lr = learning_rate(cfg.fine_tune_learning_rate, cfg.schedule, cfg.fine_tune_epochs, steps_per_epoch, cfg.warmup_epochs)
    if cfg.fine_tune_optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.RMSprop(learning_rate=lr)


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """None for 'none'; for 'balanced' n / (classes x n_c) per class, so every class weighs the same in the loss."""
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(labels, int).reshape(-1), minlength=num_classes).astype(float)
    total = counts.sum()
    return {c: float(total / (num_classes * counts[c])) if counts[c] else 0.0 for c in range(num_classes)}
