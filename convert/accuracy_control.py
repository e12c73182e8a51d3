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
        """Every quantized op's error, worst first (rmse in units of its own int8 step)."""
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
        return sorted(rows, key=lambda e: -e.rmse_per_scale)

    def model(self, denylist: Sequence[str] = ()) -> bytes:
        """The int8 model (float input and output) with the ops producing `denylist` tensors left in float."""
        self.debugger.options = self._options(denylist)
        return self.debugger.get_nondebug_quantized_model()


@dataclass
class Trial:
    """One candidate of the search: which layers stayed float and what the held-out images said."""

    float_layers: int
    agreement: float
    drop_points: float
    met: bool
    """Agreement and drop both within the targets."""


def search(quantizer: SelectiveQuantizer, ranking: Sequence[LayerError], judge: Callable[[bytes], tuple[float, float]],
           min_agreement: float, max_drop: float, max_layers: int) -> tuple[bytes, list[str], list[Trial]]:
    """The int8 model with the fewest worst-ranked layers in float that meets both targets.

    Keeps the k worst layers of `ranking` in float for k = 0, 1, 2, 4, 8, ... (at most `max_layers`)
    until a model meets the targets, then bisects between the last two k (agreement rises with k
    almost everywhere: each layer kept float removes its rounding noise).

    Args:
        quantizer: The calibrated SelectiveQuantizer.
        ranking: Layers worst first (SelectiveQuantizer.layer_errors).
        judge: model bytes -> (top-1 agreement with Keras, accuracy drop in points).
        min_agreement: Agreement to reach.
        max_drop: Accuracy budget in points.
        max_layers: Most layers kept in float.

    Returns:
        (model bytes, tensor names kept in float, every trial in the order tried). When no k meets the
        targets, the model with the highest agreement (fewest layers among equals).
    """
    trials: dict[int, tuple[bytes, Trial]] = {}

    def attempt(k: int) -> Trial:
        model = quantizer.model([e.tensor for e in ranking[:k]])
        agreement, drop = judge(model)
        trial = Trial(k, agreement, drop, agreement >= min_agreement - 1e-12 and drop <= max_drop + 1e-9)
        trials[k] = (model, trial)
        return trial

    cap = min(max_layers, len(ranking))
    ladder = [0] + [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k < cap] + [cap]
    low, high = None, None
    for k in dict.fromkeys(ladder):
        if attempt(k).met:
            high = k
            break
        low = k
    if high is not None and low is not None:
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if attempt(mid).met else (mid, high)
    met = [k for k, (_, t) in trials.items() if t.met]
    best = min(met) if met else max(trials, key=lambda k: (trials[k][1].agreement, -trials[k][1].drop_points, -k))
    order = [t for _, t in trials.values()]
    return trials[best][0], [e.tensor for e in ranking[:best]], order
