"""What every preset shares: the run's model and metadata, calibration images, held-out images and Keras's answers.

Images are decoded by the runtime's decoder (`edgetune.runtime.load_and_preprocess`), the code a
Raspberry Pi runs, so parity measures the conversion and nothing else. Parity uses every held-out
image the run has (splits/val.txt and splits/test.txt): agreement needs no labels, and 1,000 images
tell a 99% export from a 97% one where the 200 of a test split cannot.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetune import UserError
from edgetune.contract import ModelMetadata, read_metadata, read_split
from edgetune.convert.config import ConvertConfig

HELD_OUT = ("val", "test")
EXPORT_OUTPUT_KIND = "probabilities"
"""Every export ends in per-class probabilities (`edgetune.train.model.export_model`), whatever the run's logits."""
CHECK_IMAGES = 8
"""Held-out images the run's saved_model/ must reproduce the Keras probabilities on before convert uses it."""
SAVED_MODEL_TOLERANCE = 1e-4


@dataclass
class Inputs:
    """Everything the presets share: the model, its metadata, calibration and parity data."""

    run: Path
    model_file: Path
    meta: ModelMetadata
    saved_model: Path
    keras_model: object
    calibration: np.ndarray
    heldout_x: np.ndarray
    """(N, H, W, 3) raw 0..255 held-out images: val then test split."""
    heldout_y: np.ndarray
    heldout_files: list[str]
    heldout_splits: list[str]
    """Split files the held-out images come from (e.g. ['splits/val.txt', 'splits/test.txt'])."""
    keras_probs: np.ndarray
    train_items: list
    workdir: Path | None = None
    """convert's temporary folder (derived SavedModels go there)."""
    derived: dict = field(default_factory=dict)
    """Derived sources computed once per convert (e.g. the bias-corrected SavedModel)."""

    @property
    def labels(self) -> list[str]:
        return list(self.meta.labels)

    def export_metadata(self) -> ModelMetadata:
        """The run's contract as an export carries it: the same labels and preprocessing, probabilities out."""
        meta = read_metadata(self.model_file)
        meta.output_kind = EXPORT_OUTPUT_KIND
        return meta

    def int8_source(self, bias_correction: bool, rounding: str = "gptq", fold: bool = True) -> tuple[Path, dict]:
        """The SavedModel the int8 presets convert from, and what was done to it (for the preset's JSON).

        With bias correction: a copy of the Keras model with int8-grid weights (1x1 kernels rounded with GPTQ
        unless `rounding` is "nearest") and corrected biases (`edgetune.convert.bias_correction`). With `fold`:
        the preprocessing folded into the first convolution (`edgetune.convert.input_fold`), so the int8 model
        reads whole pixel values into it without requantizing them first. Exported once per convert and shared
        by every int8 preset.
        """
        if not bias_correction and not fold:
            return self.saved_model, {"bias_correction": "off", "input": "preprocessing ops quantized"}
        key = (f"bias_corrected_{rounding}" if bias_correction else "uncorrected") + ("_folded" if fold else "")
        if key not in self.derived:
            from edgetune.convert.input_fold import FOLDED, fold_preprocessing
            from edgetune.train.model import export_model, load_model

            if self.workdir is None:
                raise ValueError("Inputs.workdir is needed for derived SavedModels")
            if bias_correction:
                model, summary = self.corrected_model(rounding)
            else:
                model, summary = load_model(self.model_file), "off"  # a fresh copy, as the corrected one is
            how = {"bias_correction": summary, "input": FOLDED if fold else "preprocessing ops quantized"}
            out = self.workdir / f"saved_model_{key}"
            (fold_preprocessing(model) if fold else export_model(model)).export(str(out), verbose=False)
            self.derived[key] = (out, how)
        return self.derived[key]


    def corrected_model(self, rounding: str = "gptq") -> tuple[object, dict]:
        """A copy of the Keras model with int8-grid weights and corrected biases (`bias_correction.correct_biases`),
        and what the correction did; made once per convert (~20 s) and shared by the int8 presets' SavedModel and
        QAT's starting weights. The reference model (`keras_model`) keeps its trained weights."""
        key = ("corrected", rounding)
        if key not in self.derived:
            from edgetune.convert.bias_correction import correct_biases
            from edgetune.train.model import load_model

            model = load_model(self.model_file)
            self.derived[key] = (model, correct_biases(model, self.calibration, rounding=rounding).as_dict())
        return self.derived[key]


def sample(items: list, n: int, seed: int, stratified: bool = False) -> list:
    """A seeded sample of n items (all when n <= 0 or n >= len); stratified: as even across labels as they allow."""
    if n <= 0 or n >= len(items):
        return list(items)
    rng = np.random.default_rng(seed)
    if not stratified:
        return [items[i] for i in np.sort(rng.choice(len(items), n, replace=False))]
    labels = np.array([label for _, label in items])
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    chosen: list[int] = []
    while len(chosen) < n:  # round robin over the classes: small classes give all they have, the rest fill up
        for c in list(pools):
            if pools[c] and len(chosen) < n:
                chosen.append(int(pools[c].pop()))
    return [items[i] for i in sorted(chosen)]


def load_items(items: Sequence[tuple[Path, int]], meta: ModelMetadata, split: str, desc: str) -> np.ndarray:
    """Decode (path, label) items with the runtime's decoder; a missing or broken file is one clear line."""
    from edgetune._progress import progress_bar
    from edgetune.runtime import ImageError, load_and_preprocess

    size = tuple(meta.preprocessing.size)
    out = np.empty((len(items), size[0], size[1], 3), np.float32)
    for i, (path, _) in enumerate(progress_bar(items, total=len(items), desc=desc, unit="img")):
        try:
            out[i] = load_and_preprocess(path, size, meta.preprocessing.exif_orientation)
        except ImageError as exc:
            gone = not Path(path).exists()
            what = "no longer exists" if gone else f"cannot be decoded ({exc})"
            raise UserError(f"{path} (listed in the run's splits/{split}.txt) {what}: "
                            f"{'restore it' if gone else 'replace it'} and convert again, or retrain on the data "
                            "as it is now") from None
    return out


def _held_out(run: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    items, used = [], []
    for split in HELD_OUT:
        if (run / "splits" / f"{split}.txt").is_file():
            part = read_split(run, split)
            if part:
                items += [(p, label, split) for p, label in part]
                used.append(f"splits/{split}.txt")
    if not items:
        raise UserError(f"{run}/splits has no val.txt or test.txt with images: parity needs held-out images")
    return items, used


def _locate(cfg: ConvertConfig) -> tuple[Path, Path]:
    if cfg.run is None:
        raise UserError("give a run dir (or a model.keras with metadata.json beside it)")
    path = Path(cfg.run)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    run = path if path.is_dir() else path.parent
    return run, (path / "model.keras" if path.is_dir() else path)


def export_saved_model(run: Path, model, tmp: Path, x: np.ndarray, expected: np.ndarray) -> Path:
    """The SavedModel every preset converts from: the export graph ending in per-class probabilities.

    The run's saved_model/ is used when it gives the Keras model's probabilities on a few held-out images;
    otherwise (a run from an edgetune whose SavedModel ends in logits, a saved_model/ from other weights, a
    plain .keras file) the graph is exported here from the Keras model (`edgetune.train.model.export_model`).
    """
    from edgetune.train.model import export_model

    saved_model = run / "saved_model"
    if (saved_model / "saved_model.pb").is_file():
        why = _saved_model_mismatch(saved_model, x, expected)
        if why is None:
            return saved_model
        print(f"note: {saved_model} {why}; converting from a probability graph exported from the Keras model",
              file=sys.stderr)
    out = tmp / "saved_model"
    export_model(model).export(str(out), verbose=False)
    return out


def _saved_model_mismatch(saved_model: Path, x: np.ndarray, expected: np.ndarray) -> str | None:
    """Why the SavedModel is not the Keras model's probability graph (None when it is)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(saved_model))  # kept referenced: `serve` reads its variables
        got = np.asarray(loaded.serve(tf.constant(x, tf.float32)))
    except Exception as exc:  # noqa: BLE001 - unreadable or another signature: export afresh, say why
        return f"cannot be run ({type(exc).__name__})"
    if got.shape != expected.shape:
        return f"outputs shape {list(got.shape[1:])}, not one probability per class (an older run's logits)"
    diff = float(np.abs(got - expected).max())
    return None if diff <= SAVED_MODEL_TOLERANCE else f"differs from model.keras (max |dp| {diff:.1e})"


def prepare(cfg: ConvertConfig, tmp: Path) -> Inputs:
    """Load the run: model, metadata, deployment SavedModel, calibration and held-out images, Keras's answers."""
    from edgetune.runtime import probabilities
    from edgetune.train.model import deployment_model, load_model

    run, model_file = _locate(cfg)
    meta = read_metadata(model_file)
    if not (run / "splits" / "train.txt").is_file():
        raise UserError(f"{run} has no splits/: convert needs the run's training (calibration) and held-out file lists")
    model = load_model(model_file)
    train_items = read_split(run, "train")
    held, used = _held_out(run)
    held = sample(held, cfg.parity_images, cfg.seed)
    calib_items = sample(train_items, cfg.calibration_images, cfg.seed, stratified=cfg.calibration_sampling == "stratified")
    if not calib_items:
        raise UserError("the calibration set is empty: the run's train split has no images")
    print(f"loading {len(calib_items)} calibration and {len(held)} held-out images", file=sys.stderr)
    calibration = load_items(calib_items, meta, "train", "calibration")
    heldout_x = np.concatenate([load_items([(p, y) for p, y, s in held if s == split], meta, split, split)
                                for split in HELD_OUT])
    deploy = deployment_model(model)
    logits = np.concatenate([np.asarray(deploy(heldout_x[i:i + 64], training=False)) for i in range(0, len(heldout_x), 64)])
    keras_probs = probabilities(logits, meta.output_kind)
    saved_model = export_saved_model(run, model, tmp, heldout_x[:CHECK_IMAGES], keras_probs[:CHECK_IMAGES])
    if np.ptp(keras_probs) < 1e-6:
        print("warning: the Keras model gives the same output for every held-out image; parity numbers will say little",
              file=sys.stderr)
    order = [s for split in HELD_OUT for s in held if s[2] == split]  # the order heldout_x was loaded in
    return Inputs(run, model_file, meta, saved_model, model, calibration, heldout_x, np.array([y for _, y, _ in order]),
                  [str(p) for p, _, _ in order], used, keras_probs, train_items, tmp)
