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
    qat_epochs: int = opt("quantization-aware fine-tuning epochs (tflite_qat_int8)", 1)
    qat_learning_rate: float = opt("learning rate of the quantization-aware fine-tune (RMSprop)", 1e-5)
    qat_images: int = opt("training images used by QAT and pruning fine-tunes (0: the whole train split)", 0)
    sparsity: float = opt("target weight sparsity of the pruned presets", 0.5)
    prune_epochs: int = opt("fine-tuning epochs while pruning (sparsity ramps up over the first 70% of the steps)", 2)
    prune_learning_rate: float = opt("learning rate while pruning (RMSprop)", 1e-4)
    prune_min_weights: int = opt("layers with fewer weights stay dense (first conv, classifier, early 1x1 convs: "
                                 "about 3% of MobileNetV2's weights and the most sensitive)", 16384)
    int8_floor: float = opt("minimum top-1 agreement with Keras for integer presets", 0.98)
    float_floor: float = opt("minimum top-1 agreement with Keras for float presets", 0.995)
    pruned_floor: float = opt("minimum top-1 agreement with Keras for pruned presets: pruning retrains the weights, "
                              "so they are judged by accuracy (see the report) and a looser agreement floor", 0.95)
    parity_images: int = opt("test-split images used for the parity check (0: all)", 0)
    seed: int = opt("seed of the calibration sample and of the QAT and pruning fine-tunes", 0)

    def validate(self) -> None:
        checks = [
            (self.calibration_images >= 1, f"--calibration-images must be >= 1, got {self.calibration_images}"),
            (self.qat_epochs >= 1, f"--qat-epochs must be >= 1, got {self.qat_epochs}"),
            (self.qat_learning_rate > 0, f"--qat-learning-rate must be > 0, got {self.qat_learning_rate}"),
            (self.qat_images >= 0, f"--qat-images must be >= 0, got {self.qat_images}"),
            (0 < self.sparsity < 1, f"--sparsity must be in (0, 1), got {self.sparsity}"),
            (self.prune_epochs >= 1, f"--prune-epochs must be >= 1, got {self.prune_epochs}"),
            (self.prune_learning_rate > 0, f"--prune-learning-rate must be > 0, got {self.prune_learning_rate}"),
            (all(0 <= f <= 1 for f in (self.int8_floor, self.float_floor, self.pruned_floor)), "agreement floors must be in [0, 1]"),
            (self.prune_min_weights >= 0, f"--prune-min-weights must be >= 0, got {self.prune_min_weights}"),
            (self.parity_images >= 0, f"--parity-images must be >= 0, got {self.parity_images}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
