"""TrainConfig: every number of the recipe is a field (and a flag); a named recipe fills the unset ones.

Two recipes (`--recipe`): `tutorial` is TensorFlow's "Transfer learning and fine-tuning" exactly (head 10
epochs at Adam 1e-4, then 10 epochs from layer 100 at RMSprop 1e-5); `default` is what was measured to
generalise across cats-vs-dogs and three dev sets of other kinds (see RECIPES and the README's table).
A field left unset (None) is decided by the recipe; a flag given on the command line wins over it.
`resolve()` returns the config with every value filled in, and that is what config.json records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from edgetune import UserError
from edgetune._config import opt

# Values each recipe gives the fields left unset. fine_tune_learning_rate unset is learning_rate / 10
# in both recipes, so that `--learning-rate X` moves both stages as the tutorial's code does.
RECIPES: dict[str, dict] = {
    "tutorial": dict(epochs=10, learning_rate=1e-4, fine_tune_epochs=10, fine_tune_at=100, fine_tune_optimizer="rmsprop",
                     dropout=0.2, schedule="constant", warmup_epochs=0.0, patience=0, label_smoothing=0.0,
                     class_weight="none", feature_copies=1),
    "default": dict(epochs=30, learning_rate=1e-3, fine_tune_epochs=10, fine_tune_at=100, fine_tune_optimizer="adam",
                    dropout=0.2, schedule="cosine", warmup_epochs=1.0, patience=5, label_smoothing=0.0,
                    class_weight="balanced", feature_copies=1),
}
RECIPE_FIELDS = tuple(RECIPES["tutorial"]) + ("fine_tune_learning_rate",)
# Flags that cannot change what a run computes: --resume may differ from the interrupted run in these.
RESUME_FREE = ("verbose", "resume", "force", "out", "workers", "worker_index", "checkpoint_seconds")


@dataclass
class TrainConfig:
    """Two-stage MobileNetV2 transfer learning: a head on the frozen base, then the top of the base fine-tuned."""

    data: Path | None = opt("data folder: train/ + validation/ (or test/) class folders, or one class-folder tree; default: the tutorial's cats-vs-dogs from the cache", None)
    out: Path = opt("run dir to create (written atomically: a failed run never looks complete)", Path("runs/cats_vs_dogs"))
    recipe: str = opt("which values the flags below take when not given: default (measured across data sets) or tutorial (TensorFlow's tutorial, every number)", "default", choices=["default", "tutorial"])
    image_size: int = opt("model input height and width in pixels", 160)
    batch_size: int = opt("global batch size", 32)
    weights: str = opt("base weights: imagenet (download, or $EDGETUNE_HOME/weights cache), a .weights.h5 PATH, or none", "imagenet")
    alpha: float = opt("MobileNetV2 width multiplier", 1.0)
    epochs: int | None = opt("stage 1 epochs, frozen base, head only; at most this many with --patience (default: recipe, tutorial 10, default 30)", None)
    learning_rate: float | None = opt("stage 1 Adam learning rate (default: recipe, tutorial 1e-4, default 1e-3)", None)
    fine_tune_epochs: int | None = opt("stage 2 epochs, continuing the epoch count; 0 skips fine-tuning (default: recipe, 10 in both)", None)
    fine_tune_learning_rate: float | None = opt("stage 2 learning rate (default: learning_rate / 10 in both recipes)", None)
    fine_tune_optimizer: str | None = opt("stage 2 optimizer (default: recipe, tutorial rmsprop, default adam)", None, choices=["rmsprop", "adam"])
    fine_tune_at: int | None = opt("stage 2 unfreezes base layers from this index up (default: recipe, 100 in both)", None)
    dropout: float | None = opt("dropout rate before the classifier (default: recipe, 0.2 in both)", None)
    schedule: str | None = opt("learning-rate schedule within each stage: constant, or cosine decay after a linear warm-up (default: recipe, tutorial constant, default cosine)", None, choices=["constant", "cosine"])
    warmup_epochs: float | None = opt("cosine schedule: epochs of linear warm-up at the start of each stage (default: recipe, default 1)", None)
    patience: int | None = opt("early stopping: end a stage after this many epochs without a lower validation loss and restore its best weights; 0 = off (default: recipe, tutorial 0, default 5)", None)
    label_smoothing: float | None = opt("label smoothing of the cross entropy, 0..0.5 (default: recipe, 0 in both)", None)
    class_weight: str | None = opt("loss weight per class: none, or balanced (n / (classes x n_class), for uneven classes) (default: recipe, tutorial none, default balanced)", None, choices=["none", "balanced"])
    tune: bool = opt("before stage 1, try stage-1 learning rates of 1/3, 1 and 3 x --learning-rate with label smoothing 0 "
                     "and 0.1 on the fast path's cached features (seconds) and train with the lowest unsmoothed "
                     "validation loss; the search is in metrics.json", False)
    rotation: float = opt("RandomRotation factor (fraction of a full turn); 0 disables", 0.2)
    flip: bool = opt("RandomFlip('horizontal') augmentation", True)
    zoom: float = opt("RandomZoom augmentation: zoom in by up to this fraction of each side (a random crop of 1 - zoom .. 1 of the image); 0 disables", 0.0)
    jpeg_draft: bool = opt("decode JPEGs at 1/2, 1/4 or 1/8 scale when that still covers --image-size (libjpeg's "
                           "draft mode: several times faster to decode, other pixels); recorded in the contract, so "
                           "the runtime decodes the same way", False)
    holdout_fraction: float = opt("fraction held out when a split is missing (test from validation, as the tutorial does)", 0.2)
    seed: int = opt("seed for splits, shuffling, augmentation and initialization (runs are repeatable)", 0)
    resume: bool = opt("continue an interrupted run from its last checkpoint (flags must match the interrupted run's)", False)
    checkpoint_seconds: float = opt("inside a stage, save the --resume checkpoint at most once per this many seconds (always after a stage's first and last epoch); 0 = after every epoch", 60.0)
    force: bool = opt("replace an existing complete run dir", False)
    cache_features: str = opt("stage 1 fast path: auto (on when exact), memory, disk or off", "auto", choices=["auto", "memory", "disk", "off"])
    feature_copies: int | None = opt("fast path: augmented copies cached per training image besides the original; epoch e trains on copy e mod (1 + copies) (default: recipe, 1 in both)", None)
    strategy: str = opt("distribution: auto, one (single device), mirrored (GPUs of one host), multiworker (TF_CONFIG)", "auto", choices=["auto", "one", "mirrored", "multiworker"])
    workers: str | None = opt("multiworker: comma-separated host:port list (builds TF_CONFIG)", None)
    worker_index: int | None = opt("multiworker: index of this worker in --workers", None)
    mixed_precision: bool = opt("float16 compute with float32 logits (for GPUs)", False)
    xla: bool = opt("compile train steps with XLA", False)
    verbose: int = opt("Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch", 1)

    def preprocessing(self):
        """The preprocessing contract this run trains with and writes into its metadata."""
        from edgetune.contract import Preprocessing

        return Preprocessing(size=(self.image_size, self.image_size), jpeg_draft=self.jpeg_draft)

    def resolve(self) -> TrainConfig:
        """A copy with every recipe field filled in: the flag's value where given, else the recipe's."""
        if self.recipe not in RECIPES:
            raise UserError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        values = {k: v for k, v in RECIPES[self.recipe].items() if getattr(self, k) is None}
        out = dataclasses.replace(self, **values)
        if out.fine_tune_learning_rate is None:
            out.fine_tune_learning_rate = out.learning_rate / 10
        return out

    def validate(self) -> None:
        """Reject out-of-range values with one clear message (exit code 2 from the CLI)."""
        c = self.resolve()
        checks = [
            (c.image_size >= 32, f"--image-size must be >= 32, got {c.image_size}"),
            (c.batch_size >= 1, f"--batch-size must be >= 1, got {c.batch_size}"),
            (c.epochs >= 1, f"--epochs must be >= 1, got {c.epochs}"),
            (c.fine_tune_epochs >= 0, f"--fine-tune-epochs must be >= 0, got {c.fine_tune_epochs}"),
            # NaN fails every comparison; inf would turn the first step's loss into NaN
            (0 < c.learning_rate < float("inf"), f"--learning-rate must be a finite number > 0, got {c.learning_rate}"),
            (0 < c.fine_tune_learning_rate < float("inf"), f"--fine-tune-learning-rate must be a finite number > 0, got {c.fine_tune_learning_rate}"),
            (0 <= c.dropout < 1, f"--dropout must be in [0, 1), got {c.dropout}"),
            (0 <= c.rotation <= 1, f"--rotation must be in [0, 1], got {c.rotation}"),
            (0 <= c.zoom < 1, f"--zoom must be in [0, 1), got {c.zoom}"),
            (0 < c.holdout_fraction < 1, f"--holdout-fraction must be in (0, 1), got {c.holdout_fraction}"),
            (c.fine_tune_at >= 0, f"--fine-tune-at must be >= 0, got {c.fine_tune_at}"),
            (c.alpha in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), f"--alpha must be one of 0.35, 0.5, 0.75, 1.0, 1.3, 1.4, got {c.alpha}"),
            (c.feature_copies >= 0, f"--feature-copies must be >= 0, got {c.feature_copies}"),
            (c.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {c.warmup_epochs}"),
            (c.patience >= 0, f"--patience must be >= 0, got {c.patience}"),
            (0 <= c.label_smoothing <= 0.5, f"--label-smoothing must be in [0, 0.5], got {c.label_smoothing}"),
            (c.verbose in (0, 1, 2), f"--verbose must be 0, 1 or 2, got {c.verbose}"),
            (not (c.tune and c.cache_features == "off"), "--tune searches on cached features: it cannot run with "
                                                         "--cache-features off"),
            (c.checkpoint_seconds >= 0, f"--checkpoint-seconds must be >= 0, got {c.checkpoint_seconds}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def resume_differences(saved: dict, cfg: TrainConfig) -> list[str]:
    """'--flag: saved -> now' for every resolved value that differs from an interrupted run's config.json."""
    now = dataclasses.asdict(cfg.resolve())
    diffs = []
    for key, value in now.items():
        if key in RESUME_FREE or key not in saved:
            continue
        old = saved[key]
        value = str(value) if isinstance(value, Path) else value
        if key == "data" and old is not None and value is not None:
            old, value = str(Path(old).resolve()), str(Path(value).resolve())
        if old != value and not (key == "data" and value is None):
            diffs.append(f"--{key.replace('_', '-')}: {old!r} then, {value!r} now")
    return diffs
