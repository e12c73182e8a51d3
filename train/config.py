"""TrainConfig: every number of the recipe is a field (and a flag); defaults are the tutorial's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgetune import UserError
from edgetune._config import opt


@dataclass
class TrainConfig:
    """Two-stage MobileNetV2 transfer learning, as in TensorFlow's "Transfer learning and fine-tuning"."""

    data: Path | None = opt("data folder: train/ + validation/ (or test/) class folders, or one class-folder tree; default: the tutorial's cats-vs-dogs from the cache", None)
    out: Path = opt("run dir to create (written atomically: a failed run never looks complete)", Path("runs/cats_vs_dogs"))
    image_size: int = opt("model input height and width in pixels", 160)
    batch_size: int = opt("global batch size", 32)
    weights: str = opt("base weights: imagenet (download, or $EDGETUNE_HOME/weights cache), a .weights.h5 PATH, or none", "imagenet")
    alpha: float = opt("MobileNetV2 width multiplier", 1.0)
    epochs: int = opt("stage 1 epochs: frozen base, head only", 10)
    learning_rate: float = opt("stage 1 Adam learning rate; stage 2 uses RMSprop at learning_rate / 10", 1e-4)
    fine_tune_epochs: int = opt("stage 2 epochs, continuing the epoch count (0 skips fine-tuning)", 10)
    fine_tune_at: int = opt("stage 2 unfreezes base layers from this index up", 100)
    dropout: float = opt("dropout rate before the classifier", 0.2)
    rotation: float = opt("RandomRotation factor (fraction of a full turn); 0 disables", 0.2)
    flip: bool = opt("RandomFlip('horizontal') augmentation", True)
    holdout_fraction: float = opt("fraction held out when a split is missing (test from validation, as the tutorial does)", 0.2)
    seed: int = opt("seed for splits, shuffling, augmentation and initialization (runs are repeatable)", 0)
    resume: bool = opt("continue an interrupted run from its last completed epoch", False)
    force: bool = opt("replace an existing complete run dir", False)
    cache_features: str = opt("stage 1 fast path: auto (on when exact), memory, disk or off", "auto", choices=["auto", "memory", "disk", "off"])
    feature_copies: int = opt("fast path: augmented copies cached per training image besides the original; epoch e trains on copy e mod (1 + copies)", 1)
    strategy: str = opt("distribution: auto, one (single device), mirrored (GPUs of one host), multiworker (TF_CONFIG)", "auto", choices=["auto", "one", "mirrored", "multiworker"])
    workers: str | None = opt("multiworker: comma-separated host:port list (builds TF_CONFIG)", None)
    worker_index: int | None = opt("multiworker: index of this worker in --workers", None)
    mixed_precision: bool = opt("float16 compute with float32 logits (for GPUs)", False)
    xla: bool = opt("compile train steps with XLA", False)
    verbose: int = opt("Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch", 1)

    def validate(self) -> None:
        """Reject out-of-range values with one clear message (exit code 2 from the CLI)."""
        checks = [
            (self.image_size >= 32, f"--image-size must be >= 32, got {self.image_size}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.fine_tune_epochs >= 0, f"--fine-tune-epochs must be >= 0, got {self.fine_tune_epochs}"),
            (self.learning_rate > 0, f"--learning-rate must be > 0, got {self.learning_rate}"),
            (0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}"),
            (0 <= self.rotation <= 1, f"--rotation must be in [0, 1], got {self.rotation}"),
            (0 < self.holdout_fraction < 1, f"--holdout-fraction must be in (0, 1), got {self.holdout_fraction}"),
            (self.fine_tune_at >= 0, f"--fine-tune-at must be >= 0, got {self.fine_tune_at}"),
            (self.alpha in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), f"--alpha must be one of 0.35, 0.5, 0.75, 1.0, 1.3, 1.4, got {self.alpha}"),
            (self.feature_copies >= 0, f"--feature-copies must be >= 0, got {self.feature_copies}"),
            (self.verbose in (0, 1, 2), f"--verbose must be 0, 1 or 2, got {self.verbose}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
