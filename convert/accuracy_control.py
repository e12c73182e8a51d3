"""Accuracy-controlled int8 for TFLite: keep the fewest most sensitive layers in float until a budget holds.

NNCF's `quantize_with_accuracy_control` does this for OpenVINO and ONNX; nothing does it for TFLite.
The pieces are TensorFlow's own, public ones: `tf.lite.experimental.QuantizationDebugger` calibrates
once, reports a per-layer error of the int8 model against float (NumericVerify ops: each quantized
op next to its float twin fed the same input), and rebuilds the int8 model with denylisted nodes
(op output tensor names) left in float, from the same calibration statistics (no recalibration).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LayerError:
    """How much one quantized op's output differs from its float twin fed the same input."""

    tensor: str
    """The op's output tensor name: what `denylisted_nodes` takes."""
    op: str
    """TFLite op name (CONV_2D, DEPTHWISE_CONV_2D, ADD, ...)."""
    rmse_per_scale: float
    """Root mean square error in quantization steps (about 0.29 is pure rounding noise)."""
    mean_error_per_scale: float
    """Mean (signed) error in quantization steps: a bias that rounding noise does not explain."""
    scale: float
    """The int8 step of the op's output."""

    def as_dict(self) -> dict:
        return asdict(self)


def _dataset(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    def gen() -> Iterator[list[np.ndarray]]:
        for img in images:
            yield [img[None].astype(np.float32)]

    return gen


class SelectiveQuantizer:
    """One calibration, then int8 models with any set of layers kept in float, and per-layer errors."""

    def __init__(self, saved_model: Path, calibration: np.ndarray, debug_images: np.ndarray | None = None):
        """Calibrate the SavedModel on `calibration` (raw 0..255 images, N x H x W x 3).

        Args:
            saved_model: The deployment SavedModel.
            calibration: Images whose activation ranges set the int8 scales.
            debug_images: Images the per-layer errors are averaged over (default: the calibration images).
        """
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _dataset(calibration)
        self._tf = tf
        self._debug_images = calibration if debug_images is None else debug_images
        self.debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_dataset(self._debug_images),
            debug_options=self._options())

    def _options(self, denylist: Sequence[str] = ()):
        # Per-layer metrics take the NumericVerify output (float minus dequantized int8) of one image.
        metrics = {"mean_error": lambda d: float(np.mean(d)), "mse": lambda d: float(np.mean(np.square(d)))}
        return self._tf.lite.experimental.QuantizationDebugOptions(layer_debug_metrics=metrics,
                                                                   denylisted_nodes=list(denylist) or None)

    def layer_errors(self) -> list[LayerError]:
        """Every quantized op's error (rmse in units of its own int8 step), in execution order, for the current
        calibration (`use_calibration`) with nothing kept in float."""
        self.debugger.options = self._options()  # rebuilds the debug model from the current calibration
        self.debugger.run()
        buf = io.StringIO()
        self.debugger.layer_statistics_dump(buf)
        rows = []
        for r in csv.DictReader(io.StringIO(buf.getvalue())):
            scale = float(r["scale"])
            if scale <= 0:
                continue
            rows.append(LayerError(r["tensor_name"], r["op_name"], float(np.sqrt(float(r["mse"]))) / scale,
                                   float(r["mean_error"]) / scale, scale))
        return rows

    @property
    def calibrated(self) -> bytes:
        """The calibrated float model the int8 models are built from (activation ranges annotated)."""
        return self.debugger.calibrated_model

    def use_calibration(self, calibrated: bytes) -> None:
        """Build later models, and measure `layer_errors`, from `calibrated` (the same graph with other
        activation ranges, e.g. `activation_ranges.percentile_ranges`)."""
        self.debugger.calibrated_model = calibrated

    def model(self, denylist: Sequence[str] = ()) -> bytes:
        """The int8 model (float input and output) with the ops producing `denylist` tensors left in float."""
        self.debugger.options = self._options(denylist)
        return self.debugger.get_nondebug_quantized_model()


def ranked(errors: Sequence[LayerError]) -> list[LayerError]:
    """Worst rounding error first.

    Keeping one op float removes its own rounding but not its output's: the next int8 op requantizes
    that output on the same scale. So ranked ops help where the weights are the problem.
    """
    return sorted(errors, key=lambda e: -e.rmse_per_scale)


def tail(errors: Sequence[LayerError]) -> list[LayerError]:
    """Last op first: a float tail has no requantization between its ops, and MobileNetV2's last blocks run
    at 1/32 of the input resolution, so they cost less time than their share of the ops.
    """
    return list(reversed(errors))


def input_stage(errors: Sequence[LayerError]) -> list[LayerError]:
    """The ops from the input up to and including the first convolution (execution order), which the search
    keeps in float whatever it adds: then nothing rounds the input before the first convolution.

    Why: the model's input is a resized image whose pixel values have fractions (bilinear interpolation), and
    on low-margin models the rounding to whole pixels alone changes answers (cifar10_longtail, 32 px images
    upsampled to 160: the Keras model changes 25 of 1,358 answers on rounded input). Measured with the folded
    graph (`input_fold`: the centring ADD and Conv1), the input stage alone in float took agreement from 94.6%
    to 96.4% there and from 97.0% to 98.6% on trashnet, at 1.00-1.04x plain int8's p50.
    """
    for i, e in enumerate(errors):
        if e.op == "CONV_2D":
            return list(errors[:i + 1])
    return []


@dataclass
class Trial:
    """One candidate of the search: which layers stayed float and what the held-out images said."""

    order: str
    """Which candidate order the float layers were taken from: ranked (worst error first) or tail (last ops first)."""
    float_layers: int
    agreement: float | None
    """None: not judged (over the latency budget)."""
    drop_points: float | None
    met: bool
    """Agreement and drop both within the targets."""
    latency_ratio: float | None = None
    """p50 latency over plain int8's (only measured when a latency budget is set)."""


@dataclass
class Targets:
    """What the search must reach, and what it may spend."""

    min_agreement: float
    max_drop: float
    """Accuracy budget in points."""
    max_layers: int
    """Most ops kept in float."""
    max_latency_ratio: float | None = None
    """Largest p50 latency over plain int8 a candidate may have (None: not measured)."""

    def met(self, agreement: float, drop: float) -> bool:
        """Agreement and accuracy drop both within the targets (float noise in the measured ratios tolerated)."""
        return agreement >= self.min_agreement - 1e-12 and drop <= self.max_drop + 1e-9


def search(quantizer: SelectiveQuantizer, candidates: Sequence[LayerError], judge: Callable[[bytes], tuple[float, float]],
           targets: Targets, order: str = "ranked", cost: Callable[[bytes], float] | None = None,
           keep: Sequence[LayerError] = ()) -> tuple[bytes, list[str], list[Trial]]:
    """The int8 model with the fewest of `candidates` (taken from the front) in float that meets the targets.

    Keeps the first k candidates in float for k = 0, 1, 2, 4, 8, ... (at most `targets.max_layers`)
    until a model meets the targets, then bisects between the last two k (agreement rises with k
    almost everywhere: each op kept float removes its rounding noise). With a latency budget, a k
    whose model is slower than `max_latency_ratio` x plain int8 ends the climb (it and larger k are out).

    Args:
        quantizer: The calibrated SelectiveQuantizer.
        candidates: Ops in the order they are given up to float (worst error first, or last op first).
        judge: model bytes -> (top-1 agreement with Keras, accuracy drop in points).
        targets: Agreement, budget, most float ops, latency budget.
        order: Name of the candidate order, recorded in each Trial.
        cost: model bytes -> p50 latency over plain int8's; used when targets.max_latency_ratio is set.
        keep: Ops kept in float in every candidate (`input_stage`), counted in each Trial's float_layers.

    Returns:
        (model bytes, tensor names kept in float, every trial in the order tried). When no k meets the
        targets, the model with the highest agreement within the latency budget (fewest layers among equals).
    """
    trials: dict[int, tuple[bytes, Trial]] = {}
    budget = targets.max_latency_ratio if cost is not None else None
    kept = {e.tensor for e in keep}
    keep, candidates = list(keep), [e for e in candidates if e.tensor not in kept]

    def attempt(k: int) -> Trial:
        model = quantizer.model([e.tensor for e in keep + candidates[:k]])
        ratio = cost(model) if budget is not None and k + len(keep) > 0 else None
        if ratio is not None and ratio > budget:
            trial = Trial(order, len(keep) + k, None, None, False, ratio)  # too slow: not worth judging
        else:
            agreement, drop = judge(model)
            trial = Trial(order, len(keep) + k, agreement, drop, targets.met(agreement, drop), ratio)
        trials[k] = (model, trial)
        return trial

    cap = max(0, min(targets.max_layers - len(keep), len(candidates)))
    ladder = [0] + [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k < cap] + [cap]
    low, high = None, None
    for k in dict.fromkeys(ladder):
        t = attempt(k)
        if t.met or (t.latency_ratio is not None and t.latency_ratio > budget):
            high = k
            break
        low = k
    if high is not None and low is not None:
        while high - low > 1:
            mid = (low + high) // 2
            t = attempt(mid)
            low, high = (low, mid) if t.met or (t.latency_ratio is not None and t.latency_ratio > budget) else (mid, high)
    judged = {k: t for k, (_, t) in trials.items() if t.agreement is not None}
    met = [k for k, t in judged.items() if t.met]
    best = min(met) if met else max(judged, key=lambda k: (judged[k].agreement, -judged[k].drop_points, -k))
    return trials[best][0], [e.tensor for e in keep + candidates[:best]], [t for _, t in trials.values()]
