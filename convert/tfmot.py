"""QAT and pruning presets: the job file for the tfmot worker process, its timeout, and what it reports.

tfmot needs tf_keras (Keras 2) and switches the whole process to it, so the fine-tunes run in
`edgetune.convert._tfmot_worker`, a subprocess fed with .npy/.npz files and a JSON job.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgetune.convert.config import ConvertConfig
from edgetune.convert.input_fold import FOLDED
from edgetune.convert.inputs import Inputs, load_items, sample
from edgetune.convert.presets import Preset

WORKER_OUTPUTS = {"tflite_qat_int8": "qat_int8", "tflite_pruned_dynamic": "pruned_dynamic", "tflite_pruned_int8": "pruned_int8"}
KERAS_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def model_alpha(inp: Inputs) -> float:
    """MobileNetV2's width multiplier: metadata `source["alpha"]`, else read off the weights' shapes.

    Runs from before the field existed: the last block's projection has _make_divisible(320 * alpha, 8)
    filters, which differs for each alpha Keras offers (0.35 -> 112 ... 1.4 -> 448).
    """
    if isinstance(inp.meta.source.get("alpha"), (int, float)):
        return float(inp.meta.source["alpha"])
    from edgetune.train.model import BASE

    filters = int(inp.keras_model.get_layer(BASE).get_layer("block_16_project").kernel.shape[-1])
    for alpha in KERAS_ALPHAS:
        v = 320 * alpha
        d = max(8, int(v + 4) // 8 * 8)
        if (d + 8 if d < 0.9 * v else d) == filters:
            return alpha
    return filters / 320


def epochs_for(images: int, epochs: int, min_steps: int, batch: int = 32) -> int:
    """At least `epochs`, and enough of them for `min_steps` steps of `batch` images."""
    per_epoch = max(1, math.ceil(images / batch))
    return max(epochs, math.ceil(min_steps / per_epoch))


def _layer_weights(model) -> dict:
    from edgetune.train.model import BASE, LOGITS

    return {f"{layer.name}/{i}": w for layer in [*model.get_layer(BASE).layers, model.get_layer(LOGITS)]
            for i, w in enumerate(layer.get_weights())}


def _corrected_weights(inp: Inputs, cfg: ConvertConfig, path: Path) -> str:
    """QAT's starting weights: the int8-grid weights and corrected biases of post-training int8
    (`Inputs.corrected_model`, the same copy tflite_int8 converts), so the fine-tune starts where tflite_int8
    ends, not from nearest rounding (which undoes fine-tuning: edgetune.convert.bias_correction)."""
    np.savez(path, **_layer_weights(inp.corrected_model(cfg.weight_rounding)[0]))
    return str(path)


def _write_job(inp: Inputs, cfg: ConvertConfig, wanted: list[Preset], tmp: Path, export: Path) -> dict[str, str]:
    """The worker's inputs as files in tmp; returns {worker output name: temporary model path in export/}."""
    model = inp.keras_model
    weights = _layer_weights(model)
    np.savez(tmp / "weights.npz", **weights)
    start = None
    if cfg.bias_correction and any(p.name == "tflite_qat_int8" for p in wanted):
        start = _corrected_weights(inp, cfg, tmp / "start_weights.npz")
    items = sample(inp.train_items, cfg.qat_images, cfg.seed + 1)
    print(f"loading {len(items)} training images for QAT/pruning", file=sys.stderr)
    np.save(tmp / "train_x.npy", load_items(items, inp.meta, "train", "fine-tune images"))
    units = int(model.output_shape[-1])
    y = np.array([label for _, label in items])
    np.save(tmp / "train_y.npy", y.astype("float32").reshape(-1, 1) if units == 1 else y.astype("int32"))
    np.save(tmp / "calibration.npy", inp.calibration)
    check = inp.heldout_x[:4]
    np.save(tmp / "check_x.npy", check)
    from edgetune.train.model import deployment_model

    np.save(tmp / "check_logits.npy", np.asarray(deployment_model(model)(check, training=False)))
    outputs = {WORKER_OUTPUTS[p.name]: str(export / f".{p.name}.tmp.tflite") for p in wanted}
    job = {"spec": {"image_size": list(inp.meta.preprocessing.size), "alpha": model_alpha(inp), "units": units,
                    "dropout": float(model.get_layer("dropout").rate)},
           "weights": str(tmp / "weights.npz"), "train_x": str(tmp / "train_x.npy"), "train_y": str(tmp / "train_y.npy"),
           "calibration": str(tmp / "calibration.npy"), "check_x": str(tmp / "check_x.npy"),
           "check_logits": str(tmp / "check_logits.npy"), "outputs": outputs, "distill": cfg.distill,
           "qat_mixup": cfg.qat_mixup, "fold_input": cfg.fold_preprocessing, "start_weights": start,
           "qat_epochs": epochs_for(len(items), cfg.qat_epochs, cfg.qat_min_steps),
           "qat_learning_rate": cfg.qat_learning_rate, "sparsity": cfg.sparsity,
           "prune_epochs": epochs_for(len(items), cfg.prune_epochs, cfg.prune_min_steps),
           "prune_learning_rate": cfg.prune_learning_rate, "prune_min_weights": cfg.prune_min_weights, "seed": cfg.seed,
           "report": str(tmp / "tfmot_report.json")}
    (tmp / "job.json").write_text(json.dumps(job))
    return outputs


def run_worker(inp: Inputs, cfg: ConvertConfig, wanted: list[Preset], tmp: Path, export: Path) -> tuple[dict[str, Path], dict, float]:
    """QAT / pruning presets in one tfmot subprocess; returns their files, its report and its time.

    Raises:
        RuntimeError: The worker failed or ran past --worker-timeout (its output is in the message).
    """
    outputs = _write_job(inp, cfg, wanted, tmp, export)
    log = tmp / "tfmot.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run([sys.executable, "-m", "edgetune.convert._tfmot_worker", str(tmp / "job.json")],
                                  stdout=fh, stderr=subprocess.STDOUT, timeout=cfg.worker_timeout or None,
                                  env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
        except subprocess.TimeoutExpired:
            for path in outputs.values():
                Path(path).unlink(missing_ok=True)
            raise RuntimeError(f"the QAT/pruning worker ran past --worker-timeout {cfg.worker_timeout:g} s and was "
                               "stopped; raise it, or lower --qat-images / --qat-epochs / --prune-epochs") from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        text = log.read_text()
        tail = "\n".join(line for line in text.splitlines() if "Error" in line or "error" in line)[-800:]
        raise RuntimeError(f"tfmot worker failed (exit {proc.returncode}): {tail or text[-800:]}")
    report = json.loads((tmp / "tfmot_report.json").read_text())
    job = json.loads((tmp / "job.json").read_text())
    report["job"] = {"qat_epochs": job["qat_epochs"], "prune_epochs": job["prune_epochs"],
                     "images": int(np.load(tmp / "train_y.npy", mmap_mode="r").shape[0])}
    return {k: Path(v) for k, v in outputs.items()}, report, seconds


def settings_for(method: str, cfg: ConvertConfig, report: dict) -> dict:
    """The fine-tune's settings and the worker's measurements for one preset's metadata."""
    part = "qat" if method == "qat_int8" else "prune"
    job = report.get("job", {})
    settings = ({"qat_epochs": job.get("qat_epochs"), "qat_learning_rate": cfg.qat_learning_rate, "qat_mixup": cfg.qat_mixup,
                 "qat_start": ("bias-corrected int8-grid weights (--bias-correction, --weight-rounding "
                               f"{cfg.weight_rounding})") if cfg.bias_correction else "the trained weights",
                 "input": FOLDED if cfg.fold_preprocessing else "preprocessing ops quantized"} if part == "qat" else
                {"sparsity_target": cfg.sparsity, "prune_epochs": job.get("prune_epochs"),
                 "prune_learning_rate": cfg.prune_learning_rate, "prune_min_weights": cfg.prune_min_weights})
    settings.update(distill=cfg.distill, fine_tune_images=job.get("images"))
    return {**settings, "rebuild_max_abs_diff": report.get("rebuild_max_abs_diff"), **report.get(part, {})}
