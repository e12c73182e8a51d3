"""Reference: TensorFlow's "Transfer learning and fine-tuning" code as written, scored on edgetune's splits.

    python scripts/tutorial_reference.py --data ../shared/assets/cats_and_dogs_filtered \
        --weights ../shared/assets/mobilenet_v2/mobilenet_v2_1.0_imagenet_no_top.weights.h5 --run runs/cats_vs_dogs

The tutorial's numbers come from its own test set: the first 6 batches of a shuffled validation set
(192 images, a new random draw each time it is iterated). To compare it with an edgetune run, this
script trains the tutorial's code unchanged (image_dataset_from_directory, take/skip split, 10 epochs
with Adam, then `fit(epochs=20, initial_epoch=history.epoch[-1])`, which runs 11 fine-tuning epochs)
and then scores the trained model on exactly the files of the edgetune run's val and test splits (or
the splits edgetune would make with --seed), and on all validation images. `--freeze-bn` (default on)
adds the one change the Keras 3 trap needs: BatchNorm layers kept in inference mode in stage 2.
Prints one JSON object; the edgetune run's own metrics are put beside it when --run is given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def tutorial_model(data: Path, weights: str, seed: int, epochs: int, fine_tune_epochs: int, freeze_bn: bool):
    """Train the tutorial's code; return (model, its own test accuracy, seconds per stage)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    batch_size, img_size = 32, (160, 160)
    train_dataset = keras.utils.image_dataset_from_directory(data / "train", shuffle=True, batch_size=batch_size, image_size=img_size)
    validation_dataset = keras.utils.image_dataset_from_directory(data / "validation", shuffle=True, batch_size=batch_size, image_size=img_size)
    val_batches = tf.data.experimental.cardinality(validation_dataset)
    test_dataset = validation_dataset.take(val_batches // 5).prefetch(tf.data.AUTOTUNE)
    validation_dataset = validation_dataset.skip(val_batches // 5).prefetch(tf.data.AUTOTUNE)
    train_dataset = train_dataset.prefetch(tf.data.AUTOTUNE)

    augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])
    base_model = keras.applications.MobileNetV2(input_shape=img_size + (3,), include_top=False,
                                                weights=None if weights == "none" else weights)
    base_model.trainable = False
    inputs = keras.Input(shape=img_size + (3,))
    x = keras.applications.mobilenet_v2.preprocess_input(augmentation(inputs))
    x = base_model(x, training=False)
    x = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))

    def compile_with(optimizer):
        model.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      metrics=[keras.metrics.BinaryAccuracy(threshold=0, name="accuracy")])

    base_learning_rate = 0.0001
    compile_with(keras.optimizers.Adam(learning_rate=base_learning_rate))
    t0 = time.perf_counter()
    history = model.fit(train_dataset, epochs=epochs, validation_data=validation_dataset, verbose=2)
    t1 = time.perf_counter()
    base_model.trainable = True
    for layer in base_model.layers[:100]:
        layer.trainable = False
    if freeze_bn:
        for layer in base_model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    compile_with(keras.optimizers.RMSprop(learning_rate=base_learning_rate / 10))
    model.fit(train_dataset, epochs=epochs + fine_tune_epochs, initial_epoch=history.epoch[-1],
              validation_data=validation_dataset, verbose=2)
    t2 = time.perf_counter()
    # Fewer than 5 validation batches leave the tutorial's test set empty.
    own_test = float(model.evaluate(test_dataset, verbose=0)[1]) if int(val_batches) // 5 else None
    return model, own_test, (round(t1 - t0, 1), round(t2 - t1, 1))


def score(model, items: list[tuple[Path, int]], root: Path) -> dict:
    """Accuracy on (file, class index) pairs, decoded and resized as image_dataset_from_directory does."""
    import tensorflow as tf

    from edgetune.stats import accuracy_summary

    wrong = []
    for path, label in items:
        img = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
        logit = float(model(tf.image.resize(img, (160, 160))[None], training=False)[0, 0])
        if int(logit > 0) != label:
            wrong.append(Path(path).relative_to(root).as_posix())
    acc = 1 - len(wrong) / len(items)
    return {"accuracy": acc, **accuracy_summary(acc, len(items)), "wrong": wrong}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="cats_and_dogs_filtered folder (train/ and validation/)")
    p.add_argument("--weights", default="imagenet", help="imagenet, a .weights.h5 path, or none")
    p.add_argument("--run", type=Path, help="edgetune run dir whose split files (and seed) to score on")
    p.add_argument("--seed", type=int, help="without --run: score on the splits edgetune makes with this seed (default 0)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--fine-tune-epochs", type=int, default=10)
    p.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    from edgetune.contract import read_split
    from edgetune.train.splits import make_splits

    data = args.data.resolve()
    run_metrics = None
    if args.run:
        seed = json.loads((args.run / "config.json").read_text())["seed"] if args.seed is None else args.seed
        splits = {name: read_split(args.run, name, data_root=data) for name in ("val", "test")}
        run_metrics = json.loads((args.run / "metrics.json").read_text()).get("final")
    else:
        seed = args.seed or 0
        sp = make_splits(data, 0.2, seed, progress=False)
        splits = {name: [(s.path, s.label) for s in getattr(sp, name)] for name in ("val", "test")}
    classes = sorted(d.name for d in (data / "train").iterdir() if d.is_dir())  # the order both tools label in
    model, own_test, seconds = tutorial_model(data, args.weights, seed, args.epochs, args.fine_tune_epochs, args.freeze_bn)
    all_val = [(f, classes.index(f.parent.name)) for f in sorted((data / "validation").glob("*/*")) if f.is_file()]
    out = {"seed": seed, "freeze_bn": args.freeze_bn, "seconds": {"stage1": seconds[0], "stage2": seconds[1]},
           "tutorial_own_test": own_test, "val": score(model, splits["val"], data),
           "test": score(model, splits["test"], data), "all_validation": score(model, all_val, data)}
    if run_metrics:
        out["edgetune_run"] = {k: {m: v[m] for m in ("accuracy", "n") if m in v} for k, v in run_metrics.items()}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
