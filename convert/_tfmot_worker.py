"""Quantization-aware training and pruning with tensorflow-model-optimization, in its own process.

    TF_USE_LEGACY_KERAS=1 python -m edgetune.convert._tfmot_worker JOB.json

tfmot only works on tf_keras (Keras 2) models and switches `tf.keras` to the legacy package for the
whole process, so it never runs inside the Keras 3 process that called it. It also refuses a model
nested in a model and the Rescaling layer: the worker rebuilds the trained network as one flat
tf_keras graph (`MobileNetV2(input_tensor=...)`), copies the weights layer by layer by name, checks
the rebuild against the Keras 3 logits, and leaves the preprocessing layer unannotated.

JOB.json: {"spec": {...}, "weights": npz, "train_x": npy, "train_y": npy, "calibration": npy,
"start_weights": npz (optional: QAT starts from these, e.g. bias-corrected int8-grid weights; the float model
stays the teacher), "qat_mixup", "fold_input", "check_x": npy, "check_logits": npy, "outputs": {"qat_int8"|"pruned_dynamic"|"pruned_int8": path},
"qat_epochs", "qat_learning_rate", "sparsity", "prune_epochs", "prune_learning_rate", "prune_min_weights",
"seed", "distill" (fit the float model's probabilities instead of train_y), "report": path}
report: {"rebuild_max_abs_diff", "qat": {...}, "prune": {...}} (one part per fine-tune that ran)
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as tfk  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

from edgetune.convert.input_fold import fold_center, fold_weights  # noqa: E402  (numpy only at import)

PREPROCESS = (1.0 / 127.5, -1.0)
"""The trained model's preprocessing, x * scale + offset (train.model's Rescaling)."""


def build_flat(spec: dict, folded: bool = False) -> tfk.Model:
    """The trained network as one flat tf_keras graph; `folded`: the preprocessing is `x - 128` (weights from
    `fold_input`), as in convert's int8 source (`edgetune.convert.input_fold`)."""
    h, w = spec["image_size"]
    inputs = tfk.Input((h, w, 3), name="image")
    scale, offset = (1.0, -fold_center(*PREPROCESS)) if folded else PREPROCESS
    x = tfk.layers.Rescaling(scale, offset=offset, name="preprocess")(inputs)
    base = tfk.applications.MobileNetV2(input_tensor=x, include_top=False, weights=None, alpha=spec["alpha"])
    y = tfk.layers.GlobalAveragePooling2D(name="pooling")(base.output)
    y = tfk.layers.Dropout(spec["dropout"], name="dropout")(y)
    outputs = tfk.layers.Dense(spec["units"], name="logits")(y)
    return tfk.Model(inputs, outputs, name="edgetune_flat")


def fold_input(model: tfk.Model, float_model: tfk.Model) -> None:
    """Give `model` (built `folded`) the float model's weights with `x / 127.5 - 1` folded into Conv1.

    Why: an int8 model computes its own preprocessing with int8 ops, and those round every pixel value
    (edgetune.convert.input_fold). Folded, the input is quantized at scale 1 (whole pixel values, exact)
    and the first convolution takes W / 127.5 (`input_fold.fold_weights`, the same arithmetic); Conv1 has no
    bias, so the fold's constant goes into bn_Conv1's moving mean (BatchNorm subtracts it), where tfmot's
    Conv+BatchNorm folding keeps it.
    """
    model.set_weights(float_model.get_weights())
    conv, bn = model.get_layer("Conv1"), model.get_layer("bn_Conv1")
    _, kernel, bias = fold_weights(conv.get_weights()[0], *PREPROCESS)
    conv.set_weights([kernel.astype(np.float32)])
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, beta, (mean - bias).astype(np.float32), var])


def matching_batches(x: np.ndarray, teacher: tfk.Model, units: int, seed: int, mix: float, batch: int = 32):
    """Endless (images, teacher probabilities) batches: each image flipped at random and, with probability
    `mix`, blended with another image of the batch (mixup, weight uniform in 0..1); the teacher labels the
    very image the student sees.

    Why: on its own training images the fine-tuned float model is almost certain (measured on trashnet:
    the QAT student agreed with it on 99.7-100% of them from the first step, loss at the teacher's own
    entropy), so distilling on them says little about the low-margin images where int8 flips answers.
    Blends and flips sit between the classes, where the teacher's probabilities carry the shape of its
    decision boundary ("function matching", Beyer et al. 2022, "Knowledge distillation: A good teacher is
    patient and consistent"). Measured: held-out agreement within noise of distilling on the training
    images (trashnet 97.0 vs 96.4%, CIFAR-10 94.9 vs 95.2%), so it is opt-in (--qat-mixup).
    """
    rng = np.random.default_rng(seed)

    @tf.function
    def teach(images):
        logits = teacher(images, training=False)
        return tf.sigmoid(logits) if units == 1 else tf.nn.softmax(logits)

    n = len(x)
    size = min(batch, n)  # a data set smaller than one batch gives batches of all its images
    while True:
        idx = np.sort(rng.permutation(n)[:size])
        images = np.asarray(x[idx], np.float32)
        flip = rng.random(size) < 0.5
        images[flip] = images[flip, :, ::-1]
        weight = np.where(rng.random(size) < mix, rng.random(size), 1.0).astype(np.float32)[:, None, None, None]
        images = weight * images + (1.0 - weight) * images[rng.permutation(size)]
        yield images, teach(tf.constant(images)).numpy()


def with_probabilities(model: tfk.Model, units: int) -> tfk.Model:
    """The model's logits -> per-class probabilities: the head `edgetune.train.model.export_model` ends exports with.

    One logit z becomes [0, z] (a fixed Dense) and then a softmax: [1 - sigmoid(z), sigmoid(z)]. The fine-tunes
    train on the logits (losses from_logits); only the converted model carries the head.
    """
    z = model.output
    if units == 1:
        two = tfk.layers.Dense(2, use_bias=False, trainable=False, name="two_logits")
        z = two(z)
        two.set_weights([np.array([[0.0, 1.0]], np.float32)])
    return tfk.Model(model.input, tfk.layers.Softmax(name="probabilities")(z), name=f"{model.name}_export")


def load_weights(model: tfk.Model, weights: dict) -> None:
    loaded = 0
    for layer in model.layers:
        arrays = [weights[f"{layer.name}/{i}"] for i in range(len(layer.weights)) if f"{layer.name}/{i}" in weights]
        if layer.weights:
            if len(arrays) != len(layer.weights):
                raise RuntimeError(f"no weights for layer {layer.name} in the exported model")
            layer.set_weights(arrays)
            loaded += 1
    if loaded == 0:
        raise RuntimeError("no layer weights matched")


def freeze_batchnorm(model: tfk.Model) -> int:
    """BatchNorm in inference mode, as in training (statistics never move); returns how many were frozen.

    QAT wraps every layer (QuantizeWrapperV2.layer): the BatchNormalization sits inside the wrapper.
    """
    frozen = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, tfk.layers.BatchNormalization):
            inner.trainable = False
            frozen += 1
    return frozen


def compile_for(model: tfk.Model, spec: dict, lr: float, distill: bool) -> None:
    """RMSprop on the labels, or (distill) on the float model's probabilities with top-1 agreement as the metric."""
    binary = spec["units"] == 1
    if distill:
        loss = tfk.losses.BinaryCrossentropy(from_logits=True) if binary else tfk.losses.CategoricalCrossentropy(from_logits=True)

        def agreement(y_true, y_pred):
            if binary:
                same = tf.equal(y_true > 0.5, y_pred > 0.0)
            else:
                same = tf.equal(tf.argmax(y_true, -1), tf.argmax(y_pred, -1))
            return tf.reduce_mean(tf.cast(same, tf.float32))

        metric = agreement
    elif binary:
        loss, metric = tfk.losses.BinaryCrossentropy(from_logits=True), tfk.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")
    else:
        loss, metric = tfk.losses.SparseCategoricalCrossentropy(from_logits=True), tfk.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=tfk.optimizers.RMSprop(lr), loss=loss, metrics=[metric])


def teacher_targets(float_model: tfk.Model, x: np.ndarray, spec: dict) -> np.ndarray:
    """The float model's probabilities on the fine-tune images: the targets when distilling.

    Agreement with the float model is what the export is judged on; fitting its probabilities rather
    than the labels keeps the fine-tune from drifting towards a different (even if as accurate) model.
    """
    logits = float_model.predict(x, batch_size=64, verbose=0).astype(np.float64)
    if spec["units"] == 1:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def to_tflite(model: tfk.Model, calibration: np.ndarray | None, full_integer: bool, units: int) -> bytes:
    """The fine-tuned logits model converted with the probability head every export ends in."""
    converter = tf.lite.TFLiteConverter.from_keras_model(with_probabilities(model, units))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if full_integer:
        def gen():
            for img in calibration:
                yield [img[None].astype(np.float32)]

        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def kernel_ranges(kernel: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel (or per-tensor) range of a kernel, as tfmot's LastValueQuantizer sets it."""
    if channels > 1:
        flat = kernel.reshape(-1, channels)  # depthwise (kh, kw, C, M) flattens to C*M channels like the quantizer
        m = np.abs(flat).max(axis=0)
    else:
        m = np.full(1, np.abs(kernel).max())
    return -m, m


def init_ranges(qat_model: tfk.Model, float_model: tfk.Model, calibration: np.ndarray, batch: int = 16) -> int:
    """Start every quantizer at the float model's real range on the calibration images.

    tfmot starts activation ranges at [-6, 6] and moves them by an exponential moving average
    with decay 0.999: a fine-tune of a few hundred steps never gets them right (measured on the
    cats-vs-dogs MobileNetV2: 4% top-1 agreement before training, 73% after one epoch). Setting
    them from min/max statistics, as post-training calibration does, starts QAT where PTQ ends.
    That includes the classifier's logits (its Dense layer's `post_activation` range): left at
    [-6, 6], every logit beyond 6 was clipped to 6, and two confident classes tied.
    Returns the number of activation ranges set.
    """
    targets = {}
    for wrapper in qat_model.layers:
        if not wrapper.name.startswith("quant_"):
            continue
        name = wrapper.name[len("quant_"):]
        for v in wrapper.non_trainable_weights:
            short = v.name.split("/")[-1].split(":")[0]
            if short in ("output_min", "output_max", "post_activation_min", "post_activation_max"):
                # post_activation: a layer's own activation quantizer (the classifier Dense's, on the logits)
                targets.setdefault(name, {}).setdefault(short[-3:], []).append(v)
            elif short.endswith("kernel_min") or short.endswith("kernel_max"):
                kernel = getattr(float_model.get_layer(name), short[: -len("_min")], None)
                if kernel is not None:
                    lo, hi = kernel_ranges(kernel.numpy(), v.shape.num_elements())
                    v.assign(np.reshape(lo if short.endswith("_min") else hi, v.shape))
    names = list(targets)
    probe = tfk.Model(float_model.input, [float_model.get_layer(n).output for n in names])

    @tf.function
    def ranges(x):
        outs = probe(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return [tf.reduce_min(o) for o in outs], [tf.reduce_max(o) for o in outs]

    lo = np.full(len(names), np.inf)
    hi = np.full(len(names), -np.inf)
    for start in range(0, len(calibration), batch):
        mins, maxs = ranges(tf.constant(calibration[start:start + batch], tf.float32))
        lo, hi = np.minimum(lo, [float(m) for m in mins]), np.maximum(hi, [float(m) for m in maxs])
    for n, a, b in zip(names, lo, hi):
        # The quantizer's range must contain zero (asymmetric uint8 with an exact zero point).
        for v in targets[n]["min"]:
            v.assign(min(a, 0.0))
        for v in targets[n]["max"]:
            v.assign(max(b, 0.0))
    return sum(len(t["min"]) for t in targets.values())


class DepthwiseChannelQuantizer(tfmot.quantization.keras.quantizers.LastValueQuantizer):
    """Per-channel weights for DepthwiseConv2D, as TFLite quantizes them after training.

    tfmot's default quantizer takes the kernel's last axis as the channel axis; a depthwise kernel
    is (kh, kw, C, 1), so it ends up per-tensor, and one range for all 32..960 channels of an
    unfolded MobileNetV2 depthwise kernel wipes out the small ones (measured: the first depthwise
    output off by 86% relative error, 55% top-1 agreement before QAT instead of 98.5%).
    Flattening to (kh, kw, 1, C*M) makes the last axis the channel axis.
    """

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
        init = tfk.initializers.Constant
        return {"min_var": layer.add_weight(name + "_min", shape=(channels,), initializer=init(-6.0), trainable=False),
                "max_var": layer.add_weight(name + "_max", shape=(channels,), initializer=init(6.0), trainable=False)}

    def __call__(self, inputs, training, weights, **kwargs):
        kh, kw, c, m = inputs.shape
        flat = tf.reshape(inputs, (kh, kw, 1, c * m))
        return tf.reshape(super().__call__(flat, training, weights, **kwargs), (kh, kw, c, m))

    def get_config(self):
        return {}  # every setting is fixed in __init__


class PerChannelDepthwiseRegistry(tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry):
    """The default 8-bit registry, except that DepthwiseConv2D kernels get `DepthwiseChannelQuantizer`.

    Going through the registry (public `QuantizeRegistry.get_quantize_config`) rather than annotating
    the depthwise layers with a custom `quantize_config` matters: tfmot's layout transforms skip the
    Conv+BatchNorm+ReLU folding pattern for any layer that carries a custom config, which would put
    fake-quant ops between the depthwise conv and its BatchNorm, a graph TFLite never runs.
    """

    def get_quantize_config(self, layer):
        config = super().get_quantize_config(layer)
        if isinstance(layer, tfk.layers.DepthwiseConv2D):
            config = copy.copy(config)  # the registry hands out shared configs: change a copy only
            config.weight_quantizer = DepthwiseChannelQuantizer()
        return config


class PerChannelDepthwiseScheme(tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme):
    """The default 8-bit scheme with DepthwiseConv2D kernels quantized per channel."""

    def get_quantize_registry(self):
        return PerChannelDepthwiseRegistry()


def quantize_model(float_model: tfk.Model, calibration: np.ndarray) -> tuple[tfk.Model, int]:
    """The QAT graph of the float model, BatchNorm frozen, ranges from calibration; and how many ranges were set.

    Measured on the cats-vs-dogs MobileNetV2 (200 test images): tfmot's defaults start at 4% top-1
    agreement with the float model; calibrated ranges alone 55%; with per-channel depthwise kernels
    98.5% before any training, and the int8 TFLite after one QAT epoch agrees on 99-100% (PTQ: 98-99.5%).
    The BatchNormalization layers sit inside QuantizeWrapperV2: frozen through the wrapper, or they
    train on batch statistics (measured: 76% training accuracy in the QAT epoch instead of 99.7%).
    """
    def annotate(layer):
        if isinstance(layer, (tfk.layers.InputLayer, tfk.layers.Rescaling)):
            return layer  # preprocessing stays float: tfmot has no quantize config for Rescaling
        return tfmot.quantization.keras.quantize_annotate_layer(layer)

    annotated = tfk.models.clone_model(float_model, clone_function=annotate)
    with tfmot.quantization.keras.quantize_scope({"DepthwiseChannelQuantizer": DepthwiseChannelQuantizer}):
        model = tfmot.quantization.keras.quantize_apply(annotated, scheme=PerChannelDepthwiseScheme())
    if freeze_batchnorm(model) == 0:
        raise RuntimeError("no BatchNormalization layer found in the QAT graph to freeze")
    return model, init_ranges(model, float_model, calibration)


def qat(job: dict, float_model: tfk.Model, x, y, calibration) -> dict:
    start = float_model
    if job.get("start_weights"):  # the int8 grid weights and corrected biases post-training int8 converts
        start = build_flat(job["spec"])
        load_weights(start, dict(np.load(job["start_weights"])))
        freeze_batchnorm(start)
    if job.get("fold_input"):
        folded = build_flat(job["spec"], folded=True)
        fold_input(folded, start)
        freeze_batchnorm(folded)
        start = folded
    model, n_ranges = quantize_model(start, calibration)
    compile_for(model, job["spec"], job["qat_learning_rate"], job.get("distill", False))
    t0 = time.perf_counter()
    mix = job.get("qat_mixup", 0.0)
    if job.get("distill") and mix > 0:
        steps = max(1, len(x) // 32)
        batches = matching_batches(x, float_model, job["spec"]["units"], job.get("seed", 0), mix)
        hist = model.fit(batches, steps_per_epoch=steps, epochs=job["qat_epochs"], verbose=2)
    else:
        hist = model.fit(x, y, batch_size=32, epochs=job["qat_epochs"], shuffle=True, verbose=2)
    seconds = time.perf_counter() - t0
    data = to_tflite(model, calibration, full_integer=True, units=job["spec"]["units"])
    with open(job["outputs"]["qat_int8"], "wb") as f:
        f.write(data)
    return {"qat_seconds": round(seconds, 1), "qat_ranges_initialised": n_ranges,
            "qat_history": {k: [float(v) for v in vs] for k, vs in hist.history.items()}}


def prune(job: dict, float_model: tfk.Model, x, y, calibration) -> dict:
    steps = int(np.ceil(len(x) / 32)) * job["prune_epochs"]
    # Sparsity ramps up over the first 70% of the steps and holds for the rest (the network recovers);
    # a frequency that fits the short schedule, or the mask is never updated and sparsity stays 0.
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, job["sparsity"], begin_step=0, end_step=max(1, int(0.7 * steps)),
                                                    frequency=max(1, steps // 20))

    def dense_kernels(m):
        return [l for l in m.layers if type(l) in (tfk.layers.Conv2D, tfk.layers.Dense)]

    # The large pointwise convolutions hold almost all weights; depthwise kernels, the first conv, the classifier
    # and the early 1x1 convs are small and the most sensitive (measured on the cats-vs-dogs MobileNetV2 at 50%:
    # pruning every Conv2D/Dense left 94% top-1 agreement, keeping the 15 layers under 16k weights dense 96.5%).
    chosen = {l.name for l in dense_kernels(float_model) if int(np.prod(l.kernel.shape)) >= job["prune_min_weights"]}
    if not chosen:
        raise RuntimeError(f"no layer has --prune-min-weights {job['prune_min_weights']} weights or more: nothing to prune")

    def wrap(layer):
        if layer.name in chosen:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    model = tfk.models.clone_model(float_model, clone_function=wrap)
    freeze_batchnorm(model)
    compile_for(model, job["spec"], job["prune_learning_rate"], job.get("distill", False))
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=job["prune_epochs"], shuffle=True, verbose=2,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    kernels = {l.name: l.kernel.numpy() for l in dense_kernels(stripped)}

    def zeros(names):
        return float(sum((kernels[n] == 0).sum() for n in names) / sum(kernels[n].size for n in names))

    report = {"prune_seconds": round(time.perf_counter() - t0, 1), "prune_steps": steps,
              "prune_layers": f"{len(chosen)} of {len(kernels)} Conv2D/Dense layers",
              "prune_weight_fraction": round(sum(kernels[n].size for n in chosen) / sum(k.size for k in kernels.values()), 4),
              "sparsity": round(zeros(chosen), 4), "sparsity_all_kernels": round(zeros(list(kernels)), 4)}
    for kind, full_integer in (("pruned_dynamic", False), ("pruned_int8", True)):
        if kind in job["outputs"]:
            with open(job["outputs"][kind], "wb") as f:
                f.write(to_tflite(stripped, calibration, full_integer, job["spec"]["units"]))
    return report


def main(job_path: str) -> int:
    job = json.loads(open(job_path).read())
    tfk.utils.set_random_seed(job.get("seed", 0))  # shuffling and dropout of the fine-tunes: repeatable runs
    spec = job["spec"]
    weights = dict(np.load(job["weights"]))
    float_model = build_flat(spec)
    load_weights(float_model, weights)
    freeze_batchnorm(float_model)
    got = float_model.predict(np.load(job["check_x"]), verbose=0)
    diff = float(np.abs(got - np.load(job["check_logits"])).max())
    if diff > 1e-3:
        raise RuntimeError(f"the flat tf_keras rebuild differs from the Keras 3 model by {diff:.2e}")
    x, y = np.load(job["train_x"], mmap_mode="r"), np.load(job["train_y"])
    calibration = np.load(job["calibration"])
    report: dict = {"rebuild_max_abs_diff": diff}
    if job.get("distill"):
        y = teacher_targets(float_model, np.asarray(x), spec)  # pruning's targets; QAT with mixup makes its own
    if "qat_int8" in job["outputs"]:
        report["qat"] = qat(job, float_model, np.asarray(x), y, calibration)
    if any(k.startswith("pruned") for k in job["outputs"]):
        float_model = build_flat(spec)  # pruning starts again from the trained float weights
        load_weights(float_model, weights)
        report["prune"] = prune(job, float_model, np.asarray(x), y, calibration)
    with open(job["report"], "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
