"""The tutorial's transfer-learning model, and the augmentation-free graph that gets deployed.

Training model: raw 0..255 RGB -> augmentation -> preprocess (x/127.5 - 1, exactly MobileNetV2's
`preprocess_input`) -> MobileNetV2 base (no top) -> GlobalAveragePooling -> Dropout -> Dense logits.
Every block has a fixed layer name so that later stages (convert, QAT) can rebuild the graph from
the same layer objects without the random augmentation ops the TFLite converter rejects.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from edgetune import UserError, edgetune_home

AUGMENTATION = "augmentation"
PREPROCESS = "preprocess"
BASE = "mobilenetv2_base"
POOLING = "pooling"
DROPOUT = "dropout"
LOGITS = "logits"

# Cached copy of the ImageNet no-top weights: looked up before Keras downloads (tests and CI seed it).
IMAGENET_CACHE_NAME = "mobilenet_v2_{alpha}_imagenet_no_top.weights.h5"


def preprocess_layer() -> layers.Layer:
    """MobileNetV2's `preprocess_input` ('tf' mode: x / 127.5 - 1) as a named, serializable layer.

    In Keras 3 `preprocess_input` on a symbolic tensor becomes anonymous ops that are not in
    `model.layers`; a rebuilt graph would silently drop them (accuracy falls to chance). A layer
    with a fixed name survives every rebuild.
    """
    return layers.Rescaling(1.0 / 127.5, offset=-1.0, name=PREPROCESS)


def layer_seeds(seed: int | None, n: int) -> list[int | None]:
    """n independent seeds for the random layers of one model, derived from the run seed.

    Keras layers given the same integer seed draw the same numbers call after call: a RandomFlip and
    a RandomRotation seeded alike flipped exactly the images they rotated one way (correlation -1.0),
    so training saw every image tilted in one direction only (mirrored or not), half the tutorial's
    augmentations. Each random layer gets its own stream; the run stays repeatable.
    """
    if seed is None:
        return [None] * n
    return [int(s) for s in np.random.default_rng([seed, 0x5EED]).integers(0, 2**31 - 1, n)]


def augmentation_layer(rotation: float = 0.2, flip: bool = True, seed: int | None = None,
                       zoom: float = 0.0) -> keras.Sequential:
    """The tutorial's augmentation: RandomFlip('horizontal') + RandomRotation(0.2); active in fit only.

    `zoom` > 0 adds RandomZoom zooming *in* by up to that fraction of each side (a random crop of
    (1 - zoom)..1 of the image, scaled back up), after the rotation.
    """
    flip_seed, rotation_seed = layer_seeds(seed, 2)
    zoom_seed = layer_seeds(seed, 3)[2]  # a third stream; the first two stay what they were without zoom
    blocks: list[layers.Layer] = []
    if flip:
        blocks.append(layers.RandomFlip("horizontal", seed=flip_seed))
    if rotation > 0:
        blocks.append(layers.RandomRotation(rotation, seed=rotation_seed))
    if zoom > 0:
        blocks.append(layers.RandomZoom((-zoom, 0.0), seed=zoom_seed))
    return keras.Sequential(blocks, name=AUGMENTATION)


def build_base(image_size: tuple[int, int], weights: str | None = "imagenet", alpha: float = 1.0) -> tuple[keras.Model, str]:
    """MobileNetV2 without its top, loaded with `weights`: 'imagenet', a .weights.h5 path, or None.

    Returns the base and a description of where its weights came from.
    """
    shape = (image_size[0], image_size[1], 3)
    if weights in (None, "none", ""):
        return keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights=None, name=BASE), "none"
    if weights == "imagenet":
        cached = edgetune_home() / "weights" / IMAGENET_CACHE_NAME.format(alpha=alpha)
        if cached.is_file():
            weights = str(cached)
        else:
            try:
                base = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights="imagenet", name=BASE)
            except Exception as exc:  # network errors surface as many types
                raise UserError(
                    f"could not download the ImageNet MobileNetV2 weights ({exc.__class__.__name__}: {exc}); "
                    f"pass --weights PATH to a local .weights.h5 file, or put it at {cached}"
                ) from exc
            return base, "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist (use --weights imagenet|PATH|none)")
    base = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False, weights=None, name=BASE)
    try:
        base.load_weights(str(path))
    except Exception as exc:
        raise UserError(f"weights file {path} does not fit MobileNetV2 alpha={alpha} without top: {exc}") from exc
    return base, str(path)


def build_model(
    num_classes: int,
    image_size: tuple[int, int] = (160, 160),
    weights: str | None = "imagenet",
    alpha: float = 1.0,
    dropout: float = 0.2,
    rotation: float = 0.2,
    flip: bool = True,
    seed: int | None = None,
    zoom: float = 0.0,
) -> tuple[keras.Model, str]:
    """The training model. Two classes give one logit (as in the tutorial), more give N logits."""
    if num_classes < 2:
        raise UserError(f"need at least two classes, got {num_classes}")
    base, weights_source = build_base(image_size, weights, alpha)
    base.trainable = False
    inputs = keras.Input(shape=(image_size[0], image_size[1], 3), name="image")
    augmentation_seed, dropout_seed = layer_seeds(seed, 2)  # independent of each other (see layer_seeds)
    x = augmentation_layer(rotation, flip, augmentation_seed, zoom)(inputs)
    x = preprocess_layer()(x)
    # training=False keeps BatchNorm in inference mode while the base is frozen; for fine-tuning
    # that is not enough in Keras 3 (see freeze_for_stage), but it is still the right call here.
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name=POOLING)(x)
    x = layers.Dropout(dropout, seed=dropout_seed, name=DROPOUT)(x)
    units = 1 if num_classes == 2 else num_classes
    # float32 logits even under a mixed-precision policy: losses and exported outputs stay exact.
    outputs = layers.Dense(units, dtype="float32", name=LOGITS)(x)
    return keras.Model(inputs, outputs, name="edgetune_mobilenetv2"), weights_source


def freeze_for_stage(model: keras.Model, stage: int, fine_tune_at: int = 100) -> int:
    """Set trainability for stage 1 (frozen base) or stage 2 (base layers from `fine_tune_at` up).

    BatchNormalization layers stay frozen in both stages: with Keras 3, calling the base with
    training=False does not keep unfrozen BatchNorm layers in inference mode during fit (their
    moving statistics move after one step); trainable=False does. Returns the number of
    trainable weight tensors.
    """
    base = model.get_layer(BASE)
    if stage == 1:
        base.trainable = False
    elif stage == 2:
        if not 0 <= fine_tune_at <= len(base.layers):
            raise UserError(f"--fine-tune-at {fine_tune_at} is outside 0..{len(base.layers)} (the base has {len(base.layers)} layers)")
        base.trainable = True
        for layer in base.layers[:fine_tune_at]:
            layer.trainable = False
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    else:
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    return len(model.trainable_weights)


def deployment_model(model: keras.Model) -> keras.Model:
    """The same weights without augmentation or dropout: the graph that is exported and deployed.

    Takes raw 0..255 RGB like the training model; outputs logits.
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = model.get_layer(PREPROCESS)(inputs)
    x = model.get_layer(BASE)(x, training=False)
    x = model.get_layer(POOLING)(x)
    outputs = model.get_layer(LOGITS)(x)
    return keras.Model(inputs, outputs, name="edgetune_deploy")


PROBABILITIES = "probabilities"
TWO_LOGITS = "two_logits"


def export_model(model: keras.Model) -> keras.Model:
    """The deployment graph ending in one probability per class: what every export (SavedModel, TFLite, ONNX) holds.

    N logits get a softmax; the one logit z of a two-class model becomes [0, z] first (a fixed, bias-free
    Dense), whose softmax is exactly [1 - sigmoid(z), sigmoid(z)]. Tools that read a classifier's output as
    per-class scores (MediaPipe's ImageClassifier, Netron, any LiteRT sample app) then need no edgetune code;
    the contract of such an export says `output_kind: probabilities`. model.keras keeps its logits (training
    and the Keras reference read them).
    """
    deploy = deployment_model(model)
    z = deploy.output
    if z.shape[-1] == 1:
        two = layers.Dense(2, use_bias=False, trainable=False, dtype="float32", name=TWO_LOGITS)
        z = two(z)
        two.set_weights([np.array([[0.0, 1.0]], np.float32)])
    outputs = layers.Softmax(name=PROBABILITIES, dtype="float32")(z)
    return keras.Model(deploy.input, outputs, name="edgetune_export")


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a trained `model.keras` with a clear error for a missing or corrupt file."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.keras"
    if not p.is_file():
        raise UserError(f"model file {p} does not exist")
    try:
        return keras.models.load_model(p, compile=False)
    except Exception as exc:
        raise UserError(f"{p} is not a readable Keras model: {exc}") from exc


def recalibrate_batchnorm(model: keras.Model, dataset, max_images: int = 64) -> None:
    """Give every BatchNorm layer of the base the moving statistics of its input on `dataset`.

    A randomly initialised MobileNetV2 (`--weights none`) has moving mean 0 / variance 1 while its
    activations are nowhere near that: every input then gives the same output and a frozen base
    learns nothing. Layer by layer (each layer sees inputs already normalised by the ones before),
    this makes the inference-mode base a working feature extractor.
    """
    import numpy as np

    images = []
    for x, _ in dataset:
        images.append(np.asarray(x))
        if sum(len(b) for b in images) >= max_images:
            break
    x = model.get_layer(PREPROCESS)(np.concatenate(images)[:max_images])
    base = model.get_layer(BASE)
    for layer in base.layers:
        if not isinstance(layer, layers.BatchNormalization):
            continue
        probe = keras.Model(base.input, layer.input)
        acts = np.asarray(probe(x, training=False))
        axes = tuple(range(acts.ndim - 1))
        layer.moving_mean.assign(acts.mean(axis=axes))
        layer.moving_variance.assign(acts.var(axis=axes) + 1e-3)
