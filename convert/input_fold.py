"""Fold the model's preprocessing (x / 127.5 - 1) into its first convolution for the integer exports.

Why: in an int8 TFLite model the preprocessing ops are int8 ops too. The input is quantized to whole pixel
values (scale 1), the MUL's output gets a step of about 1.5 pixel values, and the ADD's output (x / 127.5 - 1
on a grid with zero exactly representable) cannot hold any pixel value exactly: every value lands half a
step off. Measured on a cifar10_longtail run (32 px images upsampled to 160: low-margin, every fraction
counts), those three ops alone, emulated on the Keras model, change 70 of 1,358 held-out answers — most of
plain int8's 80-88.

Folded, the graph subtracts 128 from the raw pixels (exact in int8: whole values -128..127 at scale 1, zero
point 0) and the first convolution takes the rest of the preprocessing into its kernel (W / 127.5) and a bias:
nothing rounds a pixel value before the first convolution. The subtraction also makes the convolution's own
"same" zero padding stand for the raw value 128, where the trained model padded with preprocessed 0 (raw
127.5): half a pixel value on the padded border taps, max |dp| 0.002-0.004 on the runs measured, no top-1
change. An explicit pad with 127.5 instead (exact in float, and rounded to 128 by int8 anyway) cost 3-9% p50
latency on the AVX-512/VNNI CPU measured (PADV2 before the convolution); this costs nothing measurable.
"""

from __future__ import annotations

import numpy as np

FIRST_CONV = "Conv1"
FOLDED = ("preprocessing folded into the first convolution: raw pixels go into it unrequantized "
          "(--fold-preprocessing)")


def fold_center(scale: float, offset: float) -> float:
    """The integer nearest the raw value that `x * scale + offset` maps to 0 (128 for x / 127.5 - 1)."""
    return float(np.round(-offset / scale))


def fold_weights(kernel: np.ndarray, scale: float, offset: float) -> tuple[float, np.ndarray, np.ndarray]:
    """`Rescaling(scale, offset)` followed by a bias-free convolution with `kernel`, as a subtraction of
    `center` (the integer nearest the raw value that preprocesses to 0) and a convolution with the returned
    kernel and bias: preprocessed = (raw - center) * s + (center * s + o), so
    conv_W(preprocessed) = conv_{W * s}(raw - center) + (center * s + o) * sum(W) away from the padded border.

    Returns:
        (center, folded kernel, bias per output channel), in float64.
    """
    kernel = np.asarray(kernel, np.float64)
    center = fold_center(scale, offset)
    return center, kernel * scale, (center * scale + offset) * kernel.sum((0, 1, 2))


def fold_preprocessing(model):
    """The export graph of an edgetune Keras model (`train.model.export_model`) with its preprocessing folded into
    the base's first convolution: same input (raw 0..255 RGB), the same probabilities up to float rounding
    away from the border (and half a pixel value on the first convolution's padded taps).

    The layers after the first convolution are the model's own (shared, not copied): the result is meant for
    an export, and `model` is left unchanged.

    Raises:
        ValueError: The graph does not start with a Rescaling preprocess and a bias-free first convolution.
    """
    import keras

    from edgetune.train.model import BASE, PREPROCESS, export_model

    preprocess = model.get_layer(PREPROCESS)
    base = model.get_layer(BASE)
    try:
        conv = base.get_layer(FIRST_CONV)
    except ValueError as exc:
        raise ValueError(f"the base has no first convolution named {FIRST_CONV!r}") from exc
    if not isinstance(preprocess, keras.layers.Rescaling) or not isinstance(conv, keras.layers.Conv2D):
        raise ValueError("fold_preprocessing needs a Rescaling preprocess layer followed by a Conv2D")
    if conv.use_bias or conv.padding != "same" or tuple(conv.dilation_rate) != (1, 1) or conv.groups != 1:
        raise ValueError(f"{FIRST_CONV} must be a bias-free 'same' convolution without dilation or groups")
    scale, offset = float(preprocess.scale), float(preprocess.offset)
    if scale <= 0:
        raise ValueError(f"preprocess scale must be positive, not {scale}")

    # Padding with zeros after subtracting the center is (almost) what "same" padding means in preprocessed space.
    center, kernel, bias = fold_weights(np.asarray(conv.kernel), scale, offset)
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = keras.layers.Rescaling(1.0, offset=-center, name="subtract_center")(inputs)
    folded = keras.layers.Conv2D(conv.filters, conv.kernel_size, strides=conv.strides, padding="same",
                                 use_bias=True, name=f"{FIRST_CONV}_raw_pixels")
    x = folded(x)
    folded.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    after_conv = keras.Model(conv.output, base.output, name=f"{BASE}_after_{FIRST_CONV}")
    x = after_conv(x)

    reference = export_model(model)
    # The head (pooling, logits, two-class expansion, softmax): the export graph's layers after the base.
    head = reference.layers[[layer.name for layer in reference.layers].index(BASE) + 1:]
    for layer in head:
        x = layer(x)
    return keras.Model(inputs, x, name="edgetune_export_folded")

