"""Stage 1 training of the head on a frozen base."""

from __future__ import annotations

import keras
import tensorflow as tf


def fit_stage1(model: keras.Model, cfg, splits, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset,
               initial_epoch: int, callbacks: list, strategy) -> None:
    """Plain recipe: the whole model (base frozen) runs on every image in every epoch."""
    model.fit(train_ds, epochs=cfg.epochs, initial_epoch=initial_epoch, validation_data=val_ds,
              callbacks=callbacks, verbose=cfg.verbose, shuffle=False)  # the dataset shuffles
