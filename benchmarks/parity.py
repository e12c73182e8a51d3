"""Accuracy parity of exported models against the Keras model, on exactly the run's test files.

The Keras reference predictions are computed once where TensorFlow is installed
(`write_reference`, TensorFlow imported inside it) and stored with the run as
`RUN_DIR/reference/test_probs.npy` + `test_probs.json`; a Raspberry Pi reads them back
(`read_reference`) and never needs TensorFlow. Keras and every export are fed the same decoded
arrays (`edgetune.runtime.load_and_preprocess`, the contract's preprocessing, which the runtime
tests hold equal to training's tf.data pipeline), so a difference measures the conversion alone.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetune import UserError
from edgetune.contract import ContractError, read_metadata, read_split, sha256_file, write_json_atomic
from edgetune.stats import wilson_interval

REFERENCE_DIR = "reference"
REFERENCE_SCHEMA = 1


def reference_paths(run_dir: str | os.PathLike, split: str = "test") -> tuple[Path, Path]:
    """(probabilities .npy, description .json) of a run's stored Keras reference."""
    ref = Path(run_dir) / REFERENCE_DIR
    return ref / f"{split}_probs.npy", ref / f"{split}_probs.json"


def load_split_images(items: Sequence[tuple[Path, int]], size: Sequence[int], exif: bool = True) -> np.ndarray:
    """Decode and preprocess (the contract, numpy only) the files of a split into one (N, H, W, 3) array."""
    from edgetune._progress import progress_bar
    from edgetune.runtime import load_and_preprocess

    out = np.empty((len(items), int(size[0]), int(size[1]), 3), np.float32)
    for i, (path, _) in enumerate(progress_bar(items, desc="decode", unit="img")):
        out[i] = load_and_preprocess(path, size, exif)
    return out


def logits_to_probs(logits: np.ndarray, output_kind: str) -> np.ndarray:
    """Model outputs -> (N, classes) probabilities, the same mapping as `Predictor.postprocess`."""
    z = np.asarray(logits, np.float64).reshape(len(logits), -1)
    if output_kind == "binary_logit":
        p1 = 1.0 / (1.0 + np.exp(-z[:, :1]))
        return np.concatenate([1.0 - p1, p1], axis=1).astype(np.float32)
    if output_kind == "softmax_logits":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return z.astype(np.float32)


def write_reference(run_dir: str | os.PathLike, split: str = "test", images: np.ndarray | None = None,
                    batch_size: int = 32) -> Path:
    """Compute the Keras model's probabilities on a split and store them with the run (needs TensorFlow).

    Args:
        run_dir: The training run dir (model.keras, metadata.json, splits/).
        split: Which split file to use.
        images: The already decoded split (saves decoding twice); decoded here when None.
        batch_size: Inference batch size.

    Returns:
        The path of the .npy file.
    """
    run = Path(run_dir)
    meta = read_metadata(run / "metadata.json")
    items = read_split(run, split)
    if not items:
        raise UserError(f"{run}/splits/{split}.txt is empty: nothing to compute a reference on")
    try:
        from edgetune.train.model import deployment_model, load_model
    except ImportError as exc:
        raise UserError("the Keras reference needs TensorFlow (pip install 'edgetune[train]'); on a Pi, copy "
                        f"{REFERENCE_DIR}/ from the machine that trained the model") from exc
    x = images if images is not None else load_split_images(items, meta.preprocessing.size, meta.preprocessing.exif_orientation)
    model = deployment_model(load_model(run / "model.keras"))
    logits = np.concatenate([np.asarray(model(x[i:i + batch_size], training=False)) for i in range(0, len(x), batch_size)])
    return save_reference(run, logits_to_probs(logits, meta.output_kind), split)


def save_reference(run_dir: str | os.PathLike, probs: np.ndarray, split: str = "test", model_file: str = "model.keras") -> Path:
    """Store reference probabilities (N, classes), row-aligned with the split file, with their description.

    `write_reference` calls this with the Keras model's outputs; the .npy is renamed into place only
    when complete, and the JSON records the files, the targets and the model's sha256 so that a stale
    reference (another model, other files) is refused on reading.
    """
    run = Path(run_dir)
    meta = read_metadata(run / "metadata.json")
    items = read_split(run, split)
    probs = np.asarray(probs, np.float32)
    if probs.shape != (len(items), meta.num_classes):
        raise ValueError(f"reference shape {probs.shape} != ({len(items)}, {meta.num_classes}) for {run}/splits/{split}.txt")
    y = np.array([label for _, label in items])
    npy, js = reference_paths(run, split)
    npy.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ref.", suffix=".npy", dir=npy.parent)
    os.close(fd)
    try:
        np.save(tmp, probs)
        os.replace(tmp, npy)
    finally:
        Path(tmp).unlink(missing_ok=True)
    model_path = run / model_file
    write_json_atomic(js, {
        "schema": REFERENCE_SCHEMA,
        "split": split,
        "model": model_file,
        "model_sha256": sha256_file(model_path) if model_path.is_file() else None,
        "labels": meta.labels,
        "output_kind": meta.output_kind,
        "files": [_rel(p, meta.source.get("data_root")) for p, _ in items],
        "targets": y.tolist(),
        "accuracy": float((probs.argmax(1) == y).mean()),
        "preprocessing": "edgetune.runtime.load_and_preprocess (the contract in numpy)",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return npy


def read_reference(run_dir: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, dict[str, Any]] | None:
    """The stored Keras reference (probabilities, description), or None when the run has none.

    Raises:
        ContractError: A reference that no longer matches the run (other files, or another model.keras).
    """
    run = Path(run_dir)
    npy, js = reference_paths(run, split)
    if not npy.is_file() or not js.is_file():
        return None
    import json

    info = json.loads(js.read_text())
    probs = np.load(npy)
    meta = read_metadata(run / "metadata.json")
    files = [_rel(p, meta.source.get("data_root")) for p, _ in read_split(run, split)]
    if info.get("files") != files or len(probs) != len(files):
        raise ContractError(f"{npy}: computed on other files than {run}/splits/{split}.txt; recompute it (edgetune bench --reference)")
    model_sha = meta.source.get("sha256")
    if model_sha and info.get("model_sha256") and model_sha != info["model_sha256"]:
        raise ContractError(f"{npy}: computed for another model.keras than this run's; recompute it")
    return probs, info


def _rel(path: Path, root: Any) -> str:
    try:
        return str(Path(path).relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def parity_row(name: str, probs: np.ndarray, targets: np.ndarray, labels: Sequence[str],
               reference: np.ndarray | None = None, max_drop: float = 0.5) -> dict[str, Any]:
    """Accuracy of one model and, against a reference, its drop, agreement and probability differences.

    Args:
        name: Row name (e.g. 'int8.tflite').
        probs: (N, classes) probabilities of the model.
        targets: (N,) true class indices.
        labels: Class names (for per-class accuracy).
        reference: (N, classes) Keras probabilities on the same inputs, if known.
        max_drop: Accuracy budget in percentage points.

    Returns:
        A dict row: accuracy, per_class_accuracy, and with a reference keras_accuracy,
        drop_points (Keras minus model, in points), agreement (top-1), max/mean |Δ probability|,
        within_budget.
    """
    probs = np.asarray(probs, np.float64)
    y = np.asarray(targets)
    if probs.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: {probs.shape[0]} predictions for {y.shape[0]} targets")
    pred = probs.argmax(1)
    row: dict[str, Any] = {"name": name, "status": "ok", "n": int(len(y)), "accuracy": float((pred == y).mean()) if len(y) else None}
    interval = wilson_interval(int((pred == y).sum()), len(y))
    row["accuracy_ci95"] = list(interval) if interval else None  # how much n test images can tell
    # Only classes present in the targets (an ImageNet model has 1001 labels and a handful of test images).
    row["per_class_accuracy"] = {label: float((pred[y == k] == k).mean()) for k, label in enumerate(labels) if (y == k).any()}
    if reference is not None:
        ref = np.asarray(reference, np.float64)
        if ref.shape != probs.shape:
            raise ValueError(f"{name}: reference shape {ref.shape} != predictions {probs.shape}")
        keras_acc = float((ref.argmax(1) == y).mean())
        diff = np.abs(probs - ref)
        row.update(keras_accuracy=keras_acc, drop_points=(keras_acc - row["accuracy"]) * 100.0,
                   agreement=float((ref.argmax(1) == pred).mean()), max_abs_dprob=float(diff.max()),
                   mean_abs_dprob=float(diff.mean()))
        row["within_budget"] = within_budget(row["drop_points"], max_drop)
    else:
        row.update(keras_accuracy=None, drop_points=None, agreement=None, max_abs_dprob=None, mean_abs_dprob=None,
                   within_budget=None)
    return row


def within_budget(drop_points: float | None, max_drop: float) -> bool | None:
    """Whether an accuracy drop (points; negative = better than Keras) stays inside the budget."""
    if drop_points is None:
        return None
    # Float tolerance: one image of 200 is exactly 0.5 points and must count as inside a 0.5 budget.
    return bool(drop_points <= max_drop + 1e-9)
