"""The Keras reference predictions of a run, stored with it so that parity needs no TensorFlow on a Pi.

Computed once where TensorFlow is installed (`write_reference`, TensorFlow imported inside it) on
exactly the run's split files (by default "heldout": validation + test) and stored as
`RUN_DIR/reference/<split>_probs.npy` + `<split>_probs.json`; a Raspberry Pi reads them back
(`read_reference`) and never needs TensorFlow. Keras and every export are fed the same decoded
arrays (`edgetune.runtime.load_for_contract`, the contract's preprocessing, which the runtime
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
from edgetune.contract import ContractError, Preprocessing, read_metadata, read_split, sha256_file, write_json_atomic
from edgetune.runtime.postprocess import probabilities

REFERENCE_DIR = "reference"
REFERENCE_SCHEMA = 1


def reference_paths(run_dir: str | os.PathLike, split: str = "heldout") -> tuple[Path, Path]:
    """(probabilities .npy, description .json) of a run's stored Keras reference."""
    ref = Path(run_dir) / REFERENCE_DIR
    return ref / f"{split}_probs.npy", ref / f"{split}_probs.json"


def load_split_images(items: Sequence[tuple[Path, int]], preprocessing: Preprocessing) -> np.ndarray:
    """Decode and preprocess the files of a split exactly as the contract says (the runtime's decoder, in
    threads) into one (N, H, W, 3) float32 array."""
    from edgetune._progress import progress_bar
    from edgetune.runtime import default_decode_workers, load_for_contract, map_ordered

    h, w = (int(v) for v in preprocessing.size)
    out = np.empty((len(items), h, w, 3), np.float32)
    decoded = map_ordered(lambda item: load_for_contract(item[0], preprocessing), items, default_decode_workers())
    for i, (_, x) in enumerate(progress_bar(decoded, total=len(items), desc="decode", unit="img")):
        out[i] = x
    return out


def write_reference(run_dir: str | os.PathLike, split: str = "heldout", images: np.ndarray | None = None,
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
    x = images if images is not None else load_split_images(items, meta.preprocessing)
    model = deployment_model(load_model(run / "model.keras"))
    logits = np.concatenate([np.asarray(model(x[i:i + batch_size], training=False)) for i in range(0, len(x), batch_size)])
    return save_reference(run, probabilities(logits, meta.output_kind), split)


def save_reference(run_dir: str | os.PathLike, probs: np.ndarray, split: str = "heldout", model_file: str = "model.keras") -> Path:
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
        "preprocessing": meta.preprocessing.to_dict(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return npy


def read_reference(run_dir: str | os.PathLike, split: str = "heldout") -> tuple[np.ndarray, dict[str, Any]] | None:
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
        raise ContractError(f"{npy}: computed on other files than {run}/splits/{split}.txt; recompute it with "
                            "`edgetune bench RUN --reference recompute`")
    model_sha = meta.source.get("sha256")
    if model_sha and info.get("model_sha256") and model_sha != info["model_sha256"]:
        raise ContractError(f"{npy}: computed for another model.keras than this run's; recompute it with "
                            "`edgetune bench RUN --reference recompute`")
    return probs, info


def _rel(path: Path, root: Any) -> str:
    try:
        return str(Path(path).relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)
