"""Training loop for MultiWorkerMirroredStrategy, on TensorFlow's own distribution API.

Keras 3's `fit` and `evaluate` cannot run under MultiWorkerMirroredStrategy (measured with Keras
3.15 / TF 2.21, and keras-team/keras#20585): before the first step, `_maybe_symbolic_build`
reduces a distributed data batch with `strategy.reduce`, which this strategy rejects ("Attempt to
convert a value (PerReplica...)"). So the multi-worker path runs the same model, loss, optimizer
and callbacks through `strategy.run`: per-replica losses averaged over the global batch, gradients
all-reduced by the Keras optimizer, metrics summed across workers. A `tf.train.Checkpoint` per
worker, written after every epoch into its stable folder (`RUN.partial/workers/i/backup`), lets restarted
workers continue from the last completed epoch. Class weights and label smoothing are applied to the
per-example losses here, as Keras' fit does for the other strategies.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import tensorflow as tf

from edgetune.train.callbacks import NonFiniteLoss


class DistributedLoop:
    """fit/evaluate for one compiled-by-hand model under a multi-worker strategy."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, num_classes: int, backup_dir: Path,
                 class_weight: dict[int, float] | None = None, label_smoothing: float = 0.0):
        self.model, self.strategy, self.binary, self.n = model, strategy, num_classes == 2, num_classes
        self.backup_dir = Path(backup_dir)
        self.smoothing = float(label_smoothing)
        self.class_weight = None if class_weight is None else tf.constant([class_weight[c] for c in range(num_classes)], tf.float32)
        self.optimizer = None
        self._train_step = self._eval_step = None

    def compile(self, optimizer: keras.optimizers.Optimizer) -> None:
        with self.strategy.scope():
            self.optimizer = optimizer
            self.optimizer.build(self.model.trainable_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._train_step = self._make_train_step()
        self._eval_step = self._make_eval_step()

    def _per_example(self, y, logits, weighted: bool = False):
        """Per-example losses and correctness; class-weighted losses when training with class weights."""
        if self.binary:
            target = y * (1.0 - self.smoothing) + 0.5 * self.smoothing
            loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)[:, 0]
            correct = tf.cast(tf.equal(tf.cast(logits[:, 0] > 0, y.dtype), y[:, 0]), tf.float32)
            index = tf.cast(tf.round(y[:, 0]), tf.int32)
        else:
            logp = tf.nn.log_softmax(logits)
            true = -tf.gather(logp, y, batch_dims=1)
            loss = (1.0 - self.smoothing) * true - self.smoothing * tf.reduce_mean(logp, axis=-1)
            correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=y.dtype), y), tf.float32)
            index = tf.cast(y, tf.int32)
        if weighted and self.class_weight is not None:
            loss = loss * tf.gather(self.class_weight, index)
        return loss, correct

    def _make_train_step(self):
        model, optimizer = self.model, self.optimizer

        def step(x, y):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(x, training=True), tf.float32)
                loss, correct = self._per_example(y, logits, weighted=True)
                # Averaged over the global batch: the optimizer's all-reduce then sums replicas.
                scaled = tf.nn.compute_average_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return tf.reduce_sum(loss), tf.reduce_sum(correct), tf.cast(tf.shape(y)[0], tf.float32)

        @tf.function
        def train_step(batch):
            sums = self.strategy.run(step, args=batch)
            return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

        return train_step

    def _make_eval_step(self):
        model = self.model

        def step(x, y):
            logits = tf.cast(model(x, training=False), tf.float32)
            loss, correct = self._per_example(y, logits)
            return tf.reduce_sum(loss), tf.reduce_sum(correct), tf.cast(tf.shape(y)[0], tf.float32)

        @tf.function
        def eval_step(batch):
            sums = self.strategy.run(step, args=batch)
            return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

        return eval_step

    def _run(self, step_fn, ds: tf.data.Dataset) -> dict[str, float]:
        total_loss = total_correct = total_n = 0.0
        for batch in self.strategy.experimental_distribute_dataset(ds):
            loss, correct, n = step_fn(batch)
            total_loss, total_correct, total_n = total_loss + float(loss), total_correct + float(correct), total_n + float(n)
        return {"loss": total_loss / max(total_n, 1.0), "accuracy": total_correct / max(total_n, 1.0)}

    def barrier(self) -> None:
        """Return only when every worker has reached this call (an all-reduce of one number)."""
        @tf.function
        def all_reduce():
            value = self.strategy.run(lambda: tf.constant(1.0))
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

        all_reduce()

    def evaluate(self, ds: tf.data.Dataset) -> dict[str, float]:
        if self._eval_step is None:
            self._eval_step = self._make_eval_step()
        return self._run(self._eval_step, ds)

    def fit(self, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset, initial_epoch: int, epochs: int, callbacks: list, stage: int) -> None:
        """Train epochs [initial_epoch, epochs), resuming from this worker's backup when it has one."""
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, epoch=self.epoch)
        manager = tf.train.CheckpointManager(checkpoint, str(self.backup_dir / f"stage{stage}"), max_to_keep=1)
        if manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint)
            initial_epoch = max(initial_epoch, int(self.epoch.numpy()))
        cbs = keras.callbacks.CallbackList(callbacks, model=self.model)
        self.model.stop_training = False
        cbs.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            logs = self._run(self._train_step, train_ds)
            if not math.isfinite(logs["loss"]):
                raise NonFiniteLoss(f"training diverged: stage {stage} loss became {logs['loss']} in epoch {epoch + 1}; "
                                    "nothing was written as a complete run: lower the learning rate")
            logs |= {f"val_{k}": v for k, v in self.evaluate(val_ds).items()}
            self.epoch.assign(epoch + 1)
            manager.save()
            print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
            cbs.on_epoch_end(epoch, logs)
            if self.model.stop_training:  # early stopping: every worker sees the same all-reduced val loss
                break
        cbs.on_train_end()
