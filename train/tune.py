"""`train --tune`: a small search over the head's settings on the fast path's cached features.

Stage 1 trains only the classifier on features the frozen base computed once, so a candidate costs
seconds, not an epoch over images. Each candidate (a stage-1 learning rate x label smoothing) trains
the head from the same initial weights with the run's schedule, class weights and early stopping;
the one with the lowest *unsmoothed* validation cross entropy wins (label smoothing raises the loss
it is trained on, so that loss cannot compare candidates). Stage 1 then trains with the winner.
The search lives in metrics.json ("tune"), and --resume reuses its choice instead of searching again.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import keras
import numpy as np

from edgetune import UserError
from edgetune.train import recipe
from edgetune.train.model import LOGITS

LEARNING_RATE_FACTORS = (1 / 3, 1.0, 3.0)
"""Candidate stage-1 learning rates, as factors of the recipe's (or --learning-rate's) value."""
LABEL_SMOOTHING = (0.0, 0.1)


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean unsmoothed cross entropy, accuracy) of logits against integer labels (one logit: two classes)."""
    logits = np.asarray(logits, np.float64)
    if logits.shape[1] == 1:
        z, t = logits[:, 0], np.asarray(y).reshape(-1)
        loss = np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))
        return float(loss), float(np.mean((z > 0) == (t > 0.5)))
    t = np.asarray(y).reshape(-1).astype(int)
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(t)), t])), float(np.mean(logits.argmax(1) == t))


def tune_head(fast, cfg, steps_per_epoch: int, class_weight: dict | None) -> dict:
    """Try every candidate on the cached features; returns {"candidates": [...], "chosen": {...}, "seconds": s}.

    The head's weights are put back to where they started, so stage 1 begins as it would have.
    """
    logits_layer = fast.model.get_layer(LOGITS)
    initial = logits_layer.get_weights()
    head = fast.head_model()
    val_features = np.asarray(fast.val[-1])
    candidates = []
    t0 = time.perf_counter()
    for factor in LEARNING_RATE_FACTORS:
        for smoothing in LABEL_SMOOTHING:
            logits_layer.set_weights(initial)
            trial = dataclasses.replace(cfg, learning_rate=cfg.learning_rate * factor, label_smoothing=smoothing)
            head.compile(optimizer=recipe.optimizer(1, trial, steps_per_epoch), loss=recipe.loss(fast.n, smoothing))
            callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=trial.patience,
                                                       restore_best_weights=True)] if trial.patience else []
            quiet = dataclasses.replace(fast.cfg, verbose=0)
            fast.cfg, saved = quiet, fast.cfg
            try:
                fast.fit(1, head, 0, trial.epochs, callbacks, class_weight)
            finally:
                fast.cfg = saved
            loss, accuracy = _cross_entropy(head.predict(val_features, verbose=0), fast.y_val)
            if not np.isfinite(loss):
                loss = float("inf")
            row = {"learning_rate": trial.learning_rate, "label_smoothing": smoothing, "val_loss": round(loss, 5),
                   "val_accuracy": round(accuracy, 5)}
            candidates.append(row)
            print(f"tune: learning rate {trial.learning_rate:.2g}, label smoothing {smoothing}: val loss {loss:.4f}, "
                  f"accuracy {accuracy:.4f}", file=sys.stderr)
    logits_layer.set_weights(initial)
    chosen = min(candidates, key=lambda r: (r["val_loss"], -r["val_accuracy"]))
    print(f"tune: chose learning rate {chosen['learning_rate']:.2g}, label smoothing {chosen['label_smoothing']} "
          f"({time.perf_counter() - t0:.0f} s for {len(candidates)} candidates)", file=sys.stderr)
    return {"candidates": candidates, "chosen": {k: chosen[k] for k in ("learning_rate", "label_smoothing")},
            "seconds": round(time.perf_counter() - t0, 1),
            "rule": "lowest unsmoothed validation cross entropy of the head trained on cached features"}


def apply_choice(cfg, tune: dict):
    """The config stage 1 and 2 train with: the chosen stage-1 learning rate and label smoothing.

    The stage-2 learning rate stays what the recipe resolved it to before the search.
    """
    return dataclasses.replace(cfg, **tune["chosen"])


def require_fast_path(fast) -> None:
    if fast is None:
        raise UserError("--tune searches on the fast path's cached features: use --cache-features auto, memory or "
                        "disk on one device (not --strategy mirrored/multiworker)")
