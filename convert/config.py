"""ConvertConfig: one field (and flag) per knob of `edgetune convert`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgetune import UserError
from edgetune._config import opt


@dataclass
class ConvertConfig:
    """Export a trained run (or a .keras file with metadata.json beside it) to TFLite and ONNX presets."""

    run: Path | None = opt("run dir of `edgetune train` (or a model.keras with metadata.json beside it)", None, cli=False)
    preset: str = opt("comma-separated preset names, or all (see --list)", "all")
    calibration_images: int = opt("training images used to calibrate int8 ranges (seeded sample of the train split)", 200)
    calibration_sampling: str = opt("how calibration images are drawn from the train split: stratified (as even across "
                                    "classes as they allow) or random", "stratified", choices=("stratified", "random"))
    bias_correction: bool = opt("tflite_int8, tflite_int8_uint8io and tflite_int8_ac: put each convolution's weights on "
                                "the int8 grid before conversion and move the mean output shift that rounding causes "
                                "into its bias (Nagel et al. 2019)", True)
    weight_rounding: str = opt("with --bias-correction, how weights reach the int8 grid: gptq (1x1 convolutions round "
                               "with error feedback over the calibration images' input statistics, GPTQ; the rest to the "
                               "nearest step) or nearest. Fine-tuning moves weights by less than one int8 step, so "
                               "nearest rounding mostly undoes it", "gptq", choices=("gptq", "nearest"))
    fold_preprocessing: bool = opt("tflite_int8, tflite_int8_uint8io and tflite_int8_ac: fold the preprocessing "
                                   "(x / 127.5 - 1) into the first convolution, so the int8 model feeds whole pixel values "
                                   "straight into it; as int8 ops of their own, the preprocessing requantizes every "
                                   "pixel off its value (see README)", True)
    qat_epochs: int = opt("quantization-aware fine-tuning epochs (tflite_qat_int8)", 1)
    qat_learning_rate: float = opt("learning rate of the quantization-aware fine-tune (RMSprop)", 1e-5)
    qat_mixup: float = opt("QAT distils on randomly flipped training images, this share of them blended with another "
                           "(mixup), each labelled by the Keras model on the blend: targets between the classes rather than "
                           "its near-certain answers on its own training images. 0: the training images as they are "
                           "(measured: no better than 0 on trashnet and CIFAR-10, see README)", 0.0)
    qat_images: int = opt("training images used by QAT and pruning fine-tunes (0: the whole train split)", 0)
    qat_min_steps: int = opt("QAT runs at least this many steps of 32 images: --qat-epochs grows on small data sets", 100)
    prune_min_steps: int = opt("pruning runs at least this many steps of 32 images: --prune-epochs grows on small "
                               "data sets (the pruned network needs steps to recover, whatever the data size)", 300)
    distill: bool = opt("QAT and pruning fit the Keras model's probabilities on the training images (distillation) "
                        "instead of the labels: agreement with Keras is what the exports are judged on", True)
    sparsity: float = opt("target weight sparsity of the pruned presets", 0.5)
    prune_epochs: int = opt("fine-tuning epochs while pruning (sparsity ramps up over the first 70% of the steps)", 2)
    prune_learning_rate: float = opt("learning rate while pruning (RMSprop)", 1e-4)
    prune_min_weights: int = opt("layers with fewer weights stay dense (first conv, classifier, early 1x1 convs: "
                                 "about 3% of MobileNetV2's weights and the most sensitive)", 16384)
    max_drop: float = opt("accuracy budget: largest accuracy drop vs Keras on the held-out images, in percentage "
                          "points (the same budget as bench's --max-drop)", 0.5)
    int8_floor: float = opt("top-1 agreement with Keras an integer preset must reach with 95% confidence", 0.97)
    float_floor: float = opt("top-1 agreement with Keras a float preset must reach with 95% confidence "
                             "(outputs equal to Keras within 1e-3 pass outright)", 0.98)
    pruned_floor: float = opt("top-1 agreement with Keras a pruned preset must reach with 95% confidence: pruning "
                              "retrains the weights, so they are judged by accuracy and a looser agreement floor", 0.93)
    parity_images: int = opt("held-out images used for the parity check, a seeded sample of splits/val.txt + "
                             "splits/test.txt (0: all of them)", 0)
    ac_min_agreement: float = opt("tflite_int8_ac keeps layers in float until its measured top-1 agreement reaches "
                                  "this and its drop is within --max-drop", 0.99)
    ac_max_float_layers: int = opt("tflite_int8_ac keeps at most this many ops in float", 64)
    ac_max_latency_ratio: float = opt("tflite_int8_ac gives up candidates slower than this times plain int8 "
                                      "(p50, 1 thread, measured back to back; 0: no latency budget)", 1.25)
    ac_range_percentiles: str = opt("percentile activation ranges tflite_int8_ac tries, in order, when the converter's "
                                    "(min/max) ranges miss the targets, before keeping any op in float; the float-op "
                                    "search then also starts from the best of them (comma separated, e.g. "
                                    "100,99.999,99.99; p clips 100 - p percent of each activation's calibration values "
                                    "per end, 100 = each tensor's own min/max; '' = min/max only: measured no better "
                                    "overall, see README)", "")
    worker_timeout: float = opt("seconds before the QAT/pruning worker or the ONNX export is stopped (0: no limit)", 7200.0)
    seed: int = opt("seed of the calibration sample and of the QAT and pruning fine-tunes", 0)

    @property
    def range_percentiles(self) -> list[float]:
        """--ac-range-percentiles as numbers (validated by `validate`)."""
        return [float(v) for v in self.ac_range_percentiles.split(",") if v.strip()]

    def validate(self) -> None:
        try:
            percentiles = self.range_percentiles
        except ValueError:
            raise UserError(f"--ac-range-percentiles must be comma-separated numbers, got {self.ac_range_percentiles!r}") from None
        checks = [
            (all(50 < p <= 100 for p in percentiles),
             f"--ac-range-percentiles must each be in (50, 100], got {self.ac_range_percentiles!r}"),
            (self.calibration_images >= 1, f"--calibration-images must be >= 1, got {self.calibration_images}"),
            (self.qat_epochs >= 1, f"--qat-epochs must be >= 1, got {self.qat_epochs}"),
            (self.qat_learning_rate > 0, f"--qat-learning-rate must be > 0, got {self.qat_learning_rate}"),
            (0 <= self.qat_mixup <= 1, f"--qat-mixup must be in [0, 1], got {self.qat_mixup}"),
            (self.qat_images >= 0, f"--qat-images must be >= 0, got {self.qat_images}"),
            (self.qat_min_steps >= 0 and self.prune_min_steps >= 0, "--qat-min-steps and --prune-min-steps must be >= 0"),
            (0 < self.sparsity < 1, f"--sparsity must be in (0, 1), got {self.sparsity}"),
            (self.prune_epochs >= 1, f"--prune-epochs must be >= 1, got {self.prune_epochs}"),
            (self.prune_learning_rate > 0, f"--prune-learning-rate must be > 0, got {self.prune_learning_rate}"),
            (all(0 <= f <= 1 for f in (self.int8_floor, self.float_floor, self.pruned_floor, self.ac_min_agreement)),
             "agreement floors (--int8-floor, --float-floor, --pruned-floor, --ac-min-agreement) must be in [0, 1]"),
            (self.max_drop >= 0, f"--max-drop must be >= 0 points, got {self.max_drop}"),
            (self.ac_max_latency_ratio == 0 or self.ac_max_latency_ratio >= 1,
             f"--ac-max-latency-ratio must be 0 (none) or >= 1, got {self.ac_max_latency_ratio}"),
            (self.ac_max_float_layers >= 1, f"--ac-max-float-layers must be >= 1, got {self.ac_max_float_layers}"),
            (self.worker_timeout >= 0, f"--worker-timeout must be >= 0 seconds, got {self.worker_timeout}"),
            (self.prune_min_weights >= 0, f"--prune-min-weights must be >= 0, got {self.prune_min_weights}"),
            (self.parity_images >= 0, f"--parity-images must be >= 0, got {self.parity_images}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
