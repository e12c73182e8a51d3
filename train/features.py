"""Training at speed on one machine: compute what is frozen once, train only what moves.

Stage 1 trains a head on a frozen base, yet the tutorial's recipe recomputes the whole base for
every image in every epoch. The fast path runs the base once per image copy (the original plus
`feature_copies` augmented copies, drawn with the same augmentation layers) and keeps two things:
  - the pooled features, on which stage 1 trains the head (Dropout + Dense) directly;
  - the activations where stage 2 cuts the base (the frontier below `fine_tune_at`), on which
    stage 2 trains the unfrozen top of the base plus the head.
Both are exact for a given image copy: the frozen layers (BatchNorm in inference mode) compute the
same function in either path. The approximation is the augmentation: epoch e sees copy
e % (1 + feature_copies) instead of a fresh random draw. With augmentation off, the fast path is
the plain recipe. Validation and test images are never augmented, so theirs are computed once.
"""

from __future__ import annotations

import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from edgetune.train import recipe
from edgetune.train.data import make_dataset
from edgetune.train.model import AUGMENTATION, BASE, DROPOUT, LOGITS, POOLING, PREPROCESS


def use_fast_path(cfg, strategy) -> bool:
    """auto: on for single-device training (the cache is per process); memory/disk: on; off: off."""
    if cfg.cache_features == "off" or isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False  # the cache lives in one process; multi-worker runs the plain recipe
    if cfg.cache_features == "auto":
        return not isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
    return True


def frontier(base: keras.Model, cut: int) -> list:
    """Tensors made by layers below `cut` and used by layers from `cut` up (skip connections included).

    Read from the functional graph's public surface: each layer of the base is called once, so
    `layer.input` / `layer.output` are its tensors, and a tensor's producer is the layer whose output it is.
    """
    producer = {id(t): i for i, layer in enumerate(base.layers) for t in keras.tree.flatten(layer.output)}
    found: list = []
    for layer in base.layers[cut:]:
        for t in keras.tree.flatten(layer.input):
            if producer[id(t)] < cut and not any(t is f for f in found):
                found.append(t)
    return found


class FeatureCache:
    """Per image copy: pooled features (stage 1) and frontier activations (stage 2), in memory or on disk."""

    def __init__(self, model: keras.Model, cut: int | None, folder=None, preprocessing=None):
        base = model.get_layer(BASE)
        # cut None: stage 1 only (pooled features); else the frontier below layer `cut` as well.
        self.front = frontier(base, cut) if cut else []
        # One pass gives both: raw image -> preprocess -> bottom -> frontier -> top -> pooled features.
        inputs = keras.Input(model.input_shape[1:])
        x = model.get_layer(PREPROCESS)(inputs)
        if self.front:
            mids = keras.Model(base.input, self.front)(x)
            mids = list(mids) if isinstance(mids, (list, tuple)) else [mids]
            pooled = model.get_layer(POOLING)(keras.Model(self.front, base.output)(mids))
        else:
            mids, pooled = [], model.get_layer(POOLING)(base(x, training=False))
        self.extractor = keras.Model(inputs, [*mids, pooled])
        self.folder = folder
        self.preprocessing = preprocessing  # the run's contract (JPEG draft or not); None: the defaults

    def compute(self, samples, size, batch_size: int, num_classes: int, augment=None, desc: str = "") -> list[np.ndarray]:
        """Arrays [frontier_0, ..., pooled] for `samples` (augmented by `augment` when given)."""
        ds = make_dataset(samples, size, batch_size, num_classes, cache=False, preprocessing=self.preprocessing).map(lambda x, y: x)
        if augment is not None:
            ds = ds.map(lambda x: augment(x, training=True))
        outputs: list[list[np.ndarray]] = []
        t0 = time.perf_counter()
        for batch in ds:
            outs = self.extractor(batch, training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]  # one output comes back bare
            outputs.append([np.asarray(o) for o in outs])
        arrays = [np.concatenate(parts) for parts in zip(*outputs)]
        print(f"cached {desc}: {len(samples)} images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if self.folder is not None:  # disk: keep memory free, read back through memory maps
            self.folder.mkdir(parents=True, exist_ok=True)
            out = []
            for i, a in enumerate(arrays):
                path = self.folder / f"{desc.replace(' ', '_')}_{i}.npy"
                np.save(path, a)
                out.append(np.load(path, mmap_mode="r"))
            arrays = out
        return arrays


def _labels(samples, num_classes: int) -> np.ndarray:
    y = np.array([s.label for s in samples])
    return y.astype("float32").reshape(-1, 1) if num_classes == 2 else y.astype("int32")


def _epoch_plan(n: int, n_copies: int, seed: int, first_epoch: int, last_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch e: the copy it trains on (e % n_copies) and a seeded shuffled order of the n images."""
    epochs = range(first_epoch, last_epoch)
    copies = np.array([e % n_copies for e in epochs], np.int64)
    orders = np.stack([np.random.default_rng([seed, e]).permutation(n) for e in epochs]) if len(epochs) else np.zeros((0, n), np.int64)
    return copies, orders


def _epoch_dataset(copies: list[list[np.ndarray]], which: slice, labels: np.ndarray, batch_size: int,
                   seed: int, first_epoch: int, last_epoch: int) -> tf.data.Dataset:
    """Batches for epochs [first, last): epoch e uses copy e % len(copies), in a seeded shuffled order."""
    n = len(labels)
    plan_copies, plan_orders = _epoch_plan(n, len(copies), seed, first_epoch, last_epoch)
    in_memory = not any(isinstance(a, np.memmap) for c in copies for a in c[which])
    if in_memory:
        # All copies stacked into one tensor per input, indexed by copy * n + image: tf.data gathers
        # whole batches in C++, with no Python in the loop (a generator here cost ~1 s per 100 steps).
        stacked = [tf.constant(np.concatenate([np.asarray(c[which][k]) for c in copies])) for k in range(which.stop - which.start)]
        y = tf.constant(labels)
        flat = tf.constant((plan_copies[:, None] * n + plan_orders).reshape(-1))
        per_epoch = [flat[i * n:(i + 1) * n] for i in range(len(plan_copies))]

        def gather(idx):
            xs = tuple(tf.gather(a, idx) for a in stacked)
            return (xs if len(xs) > 1 else xs[0]), tf.gather(y, idx % n)

        ds = None
        for order in per_epoch:  # batch per epoch, so no batch straddles two epochs
            d = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
            ds = d if ds is None else ds.concatenate(d)
        return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)

    def gen():  # disk: memory-mapped arrays, read batch by batch
        for copy, order in zip(plan_copies, plan_orders):
            xs = copies[copy][which]
            for start in range(0, n, batch_size):
                idx = np.sort(order[start:start + batch_size])  # sorted: sequential reads from the maps
                batch = tuple(np.asarray(a[idx]) for a in xs)
                yield (batch if len(batch) > 1 else batch[0]), labels[idx]

    arrays = copies[0][which]
    specs = tuple(tf.TensorSpec((None, *a.shape[1:]), tf.float32) for a in arrays)
    spec = (specs if len(specs) > 1 else specs[0], tf.TensorSpec((None, *labels.shape[1:]), tf.as_dtype(labels.dtype)))
    return tf.data.Dataset.from_generator(gen, output_signature=spec).prefetch(2)


def _fixed_dataset(arrays: list[np.ndarray], labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    xs = tuple(np.asarray(a) for a in arrays)
    return tf.data.Dataset.from_tensor_slices((xs if len(xs) > 1 else xs[0], labels)).batch(batch_size)


class FastPath:
    """Caches built once per run, then used by both stages."""

    def __init__(self, model: keras.Model, cfg, splits, size, folder=None):
        self.cfg, self.n = cfg, len(splits.classes)
        n_layers = len(model.get_layer(BASE).layers)
        self.stage2 = cfg.fine_tune_epochs > 0 and 0 <= cfg.fine_tune_at < n_layers
        # Layer 0 of the base is its InputLayer (no weights): unfreezing from 0 or from 1 trains the same
        # layers, so fine_tune_at 0 cuts at 1 and caches the preprocessed image copies themselves.
        cache = FeatureCache(model, max(1, cfg.fine_tune_at) if self.stage2 else None, folder, cfg.preprocessing())
        self.n_front = len(cache.front)
        augment = model.get_layer(AUGMENTATION)
        has_aug = len(augment.layers) > 0
        n_aug = cfg.feature_copies if has_aug else 0
        self.train_copies = [cache.compute(splits.train, size, cfg.batch_size, self.n, None, "train original")]
        for k in range(n_aug):
            self.train_copies.append(cache.compute(splits.train, size, cfg.batch_size, self.n, augment, f"train augmented {k + 1}"))
        self.val = cache.compute(splits.val, size, cfg.batch_size, self.n, None, "val")
        self.y_train, self.y_val = _labels(splits.train, self.n), _labels(splits.val, self.n)
        self.front_inputs = [keras.Input(t.shape[1:], name=f"frontier_{i}") for i, t in enumerate(cache.front)]
        self.top = keras.Model(cache.front, model.get_layer(BASE).output, name="base_top") if self.stage2 else None
        self.model = model

    def head_model(self) -> keras.Model:
        """Pooled features -> Dropout -> Dense, sharing the layers (and weights) of the full model."""
        inputs = keras.Input(self.val[-1].shape[1:], name="features")
        x = self.model.get_layer(DROPOUT)(inputs)
        return keras.Model(inputs, self.model.get_layer(LOGITS)(x), name="head")

    def top_model(self) -> keras.Model:
        """Frontier activations -> unfrozen top of the base -> pooling -> Dropout -> Dense (shared layers)."""
        x = self.top(self.front_inputs if len(self.front_inputs) > 1 else self.front_inputs[0], training=False)
        x = self.model.get_layer(POOLING)(x)
        x = self.model.get_layer(DROPOUT)(x)
        return keras.Model(self.front_inputs, self.model.get_layer(LOGITS)(x), name="top_and_head")

    def fit(self, stage: int, trainer_model: keras.Model, first_epoch: int, last_epoch: int, callbacks: list,
            class_weight: dict | None = None) -> None:
        which = slice(self.n_front, self.n_front + 1) if stage == 1 else slice(0, self.n_front)
        steps = math.ceil(len(self.y_train) / self.cfg.batch_size)
        train = _epoch_dataset(self.train_copies, which, self.y_train, self.cfg.batch_size, self.cfg.seed + stage, first_epoch, last_epoch)
        val = _fixed_dataset(self.val[which], self.y_val, self.cfg.batch_size)
        trainer_model.fit(train, epochs=last_epoch, initial_epoch=first_epoch, steps_per_epoch=steps,
                          validation_data=val, callbacks=callbacks, verbose=self.cfg.verbose, shuffle=False,
                          class_weight=class_weight)


def fit_stage(stage: int, model: keras.Model, cfg, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset, initial_epoch: int,
              last_epoch: int, callbacks: list, fast: FastPath | None = None, class_weight: dict | None = None) -> None:
    """Fit epochs [initial_epoch, last_epoch) of a stage: the full model on images, or on the fast path's caches.

    Stage 1 trains the head on cached pooled features, stage 2 the unfrozen top of the base plus the
    head on cached frontier activations; both sub-models share the full model's layers (and weights).
    """
    trainer = None
    if fast is not None and (stage == 1 or fast.stage2):
        trainer = fast.head_model() if stage == 1 else fast.top_model()
        trainer.compile(optimizer=model.optimizer, loss=model.loss, metrics=recipe.metrics(fast.n), jit_compile=cfg.xla)
    if trainer is None:
        model.fit(train_ds, epochs=last_epoch, initial_epoch=initial_epoch, validation_data=val_ds, callbacks=callbacks,
                  verbose=cfg.verbose, shuffle=False, class_weight=class_weight)  # the dataset shuffles
        return
    fast.fit(stage, trainer, initial_epoch, last_epoch, callbacks, class_weight)
