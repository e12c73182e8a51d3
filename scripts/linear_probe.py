"""The floor every recipe must beat: frozen MobileNetV2 features at 160 px + one softmax layer.

    python scripts/linear_probe.py --data ../shared/assets/devsets/trashnet --seed 0
    python scripts/linear_probe.py --data ../shared/assets/cats_and_dogs_filtered --seed 0

Splits are exactly those `edgetune train --seed S` makes (`edgetune.train.splits.make_splits`). The
probe has no early stopping, so it trains on everything that is not scored: a single class-folder tree
trains on train + val (the seeded 80%) and is scored on the 20% test split; a train/ + validation/
layout (cats vs dogs) trains on train/ and is scored on every validation image (the run's val + test).
Head: one Dense softmax layer (one logit per class, two for two classes) on the pooled features,
Adam 1e-3, 30 epochs, batch 32, seeded. Decoding is edgetune's own (`load_images`), ImageNet weights
from --weights or the edgetune cache. Prints one JSON line: accuracy with its count and 95% interval,
macro F1, balanced accuracy and per-class recall. `--cache DIR` keeps the features (npz) for reruns.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def frozen_features(paths: list, size: int, weights: str) -> np.ndarray:
    """Pooled (N, 1280) features of the frozen ImageNet base, computed the way the training model does."""
    import keras

    from edgetune.train.data import load_images
    from edgetune.train.model import build_base, preprocess_layer

    base, _ = build_base((size, size), weights)
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(base(preprocess_layer()(inputs), training=False))
    extractor = keras.Model(inputs, pooled)
    out = []
    for start in range(0, len(paths), 256):  # decode in chunks: bounded memory on large sets
        x = load_images(paths[start:start + 256], (size, size))
        out.append(extractor.predict(x, batch_size=64, verbose=0))
    return np.concatenate(out).astype(np.float32)


def probe_data(data: Path, seed: int, size: int, weights: str, cache: Path | None) -> dict:
    """Features and labels of the probe's training and scored images (cached per data set and seed)."""
    from edgetune.train.splits import detect_layout, make_splits

    key = cache / f"{data.name}_s{seed}_{size}.npz" if cache else None
    if key is not None and key.is_file():
        loaded = np.load(key, allow_pickle=False)
        return {k: loaded[k] for k in loaded.files} | {"classes": list(loaded["classes"])}
    splits = make_splits(data, 0.2, seed, progress=False)
    given = "all" not in detect_layout(data)
    fit, scored = (splits.train, splits.val + splits.test) if given else (splits.train + splits.val, splits.test)
    feats = frozen_features([str(s.path) for s in fit + scored], size, weights)
    out = {"x_fit": feats[:len(fit)], "y_fit": np.array([s.label for s in fit]), "x_test": feats[len(fit):],
           "y_test": np.array([s.label for s in scored]), "classes": np.array(splits.classes)}
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        np.savez(key, **out)
    return out | {"classes": list(splits.classes)}


def train_probe(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int, epochs: int = 30, lr: float = 1e-3):
    """One softmax layer, Adam `lr`, `epochs` epochs of batch 32: the probe of issue 12."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Dense(n_classes)])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model


def main(argv: list[str] | None = None) -> int:
    from edgetune.train.model import IMAGENET_CACHE_NAME

    from edgetune import edgetune_home
    from edgetune.train.metrics import classification_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--weights", default=str(edgetune_home() / "weights" / IMAGENET_CACHE_NAME.format(alpha=1.0)))
    parser.add_argument("--cache", type=Path, default=None, help="folder for cached features (npz)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    d = probe_data(args.data.resolve(), args.seed, args.image_size, args.weights, args.cache)
    t1 = time.perf_counter()
    model = train_probe(d["x_fit"], d["y_fit"], len(d["classes"]), args.seed)
    preds = model.predict(d["x_test"], verbose=0).argmax(axis=1)
    report = classification_report(d["y_test"], preds, d["classes"])
    row = {"data": args.data.name, "seed": args.seed, "recipe": "linear_probe", "n_fit": len(d["y_fit"]),
           "features_seconds": round(t1 - t0, 1), "seconds": round(time.perf_counter() - t0, 1)} | report
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
