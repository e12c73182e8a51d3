"""`convert_run`: every preset through one wrapper — export, time, load check, parity, metadata.

Each model is written under a temporary name in `export/`, loaded by the edgetune runtime (the same
code a Raspberry Pi runs), compared with the Keras model on the run's test images, and renamed to
`export/<preset>.tflite|.onnx` (+ `<preset>.json`) only then. A preset below its agreement floor is
moved to `export/failed/` with its numbers; the command exits non-zero after finishing the others.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetune import UserError, __version__
from edgetune._config import config_to_dict
from edgetune.contract import ModelMetadata, TensorSpec, read_metadata, read_split, sha256_file, write_json_atomic, write_metadata
from edgetune.convert.config import ConvertConfig
from edgetune.convert.presets import PRESETS, Preset, resolve

TFMOT_PRESETS = {"tflite_qat_int8": "qat_int8", "tflite_pruned_dynamic": "pruned_dynamic", "tflite_pruned_int8": "pruned_int8"}


@dataclass
class ExportRow:
    """One preset's outcome: what the summary table, the JSON and the exit code are made of."""

    preset: str
    status: str = "ok"
    """ok | failed (below its agreement floor) | error (the converter or the load check failed)"""
    path: str | None = None
    size_bytes: int = 0
    gzip_bytes: int = 0
    seconds: float = 0.0
    parity: dict = field(default_factory=dict)
    detail: str = ""


@dataclass
class Inputs:
    """Everything the presets share: the model, its metadata, calibration and parity data."""

    run: Path
    model_file: Path
    meta: ModelMetadata
    saved_model: Path
    keras_model: object
    calibration: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    keras_probs: np.ndarray
    train_files: list


def _probabilities(logits: np.ndarray) -> np.ndarray:
    from edgetune.train.report import probabilities

    return probabilities(logits)


def _sample(items: list, n: int, seed: int) -> list:
    if n <= 0 or n >= len(items):
        return list(items)
    idx = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[i] for i in idx]


def prepare(cfg: ConvertConfig, tmp: Path) -> Inputs:
    """Load the run: model, metadata, deployment SavedModel, calibration and test images."""
    from edgetune.train.data import load_images
    from edgetune.train.model import deployment_model, load_model

    if cfg.run is None:
        raise UserError("give a run dir (or a model.keras with metadata.json beside it)")
    path = Path(cfg.run)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    run = path if path.is_dir() else path.parent
    model_file = path / "model.keras" if path.is_dir() else path
    meta = read_metadata(model_file)
    if not (run / "splits" / "train.txt").is_file():
        raise UserError(f"{run} has no splits/: convert needs the run's training (calibration) and test file lists")
    model = load_model(model_file)
    train_items, test_items = read_split(run, "train"), read_split(run, "test")
    missing = [p for p, _ in train_items[:1] + test_items[:1] if not p.is_file()]
    if missing:
        raise UserError(f"the run's images are not where its split files say ({missing[0]}); is the data folder still there?")
    size = tuple(meta.preprocessing.size)
    calib_items = _sample(train_items, cfg.calibration_images, cfg.seed)
    if not calib_items:
        raise UserError("the calibration set is empty: the run's train split has no images")
    print(f"loading {len(calib_items)} calibration and {len(test_items)} test images", file=sys.stderr)
    calibration = load_images([p for p, _ in calib_items], size)
    test_items = _sample(test_items, cfg.parity_images, cfg.seed)
    test_x = load_images([p for p, _ in test_items], size)
    deploy = deployment_model(model)
    saved_model = run / "saved_model"
    if not (saved_model / "saved_model.pb").is_file():  # a plain .keras file: export the deployment graph here
        saved_model = tmp / "saved_model"
        deploy.export(str(saved_model), verbose=False)
    keras_probs = _probabilities(deploy.predict(test_x, verbose=0, batch_size=64))
    if np.ptp(keras_probs) < 1e-6:
        print("warning: the Keras model gives the same output for every test image; parity numbers will say little", file=sys.stderr)
    return Inputs(run, model_file, meta, saved_model, model, calibration, test_x, np.array([l for _, l in test_items]),
                  keras_probs, train_items)


def parity(probs: np.ndarray, keras_probs: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1 agreement with Keras, |Δ probability| and both accuracies (points = percentage points)."""
    agree = probs.argmax(1) == keras_probs.argmax(1)
    delta = np.abs(probs - keras_probs)
    acc_export = float((probs.argmax(1) == labels).mean())
    acc_keras = float((keras_probs.argmax(1) == labels).mean())
    return {"images": int(len(labels)), "agreement": float(agree.mean()), "max_abs_dprob": float(delta.max()),
            "mean_abs_dprob": float(delta.mean()), "accuracy": acc_export, "keras_accuracy": acc_keras,
            "accuracy_drop_points": round(100 * (acc_keras - acc_export), 3)}


def _metadata(inp: Inputs, preset: Preset, model_path: Path, extra: dict) -> ModelMetadata:
    from edgetune.runtime._backends import open_backend

    backend = open_backend(model_path, threads=1)
    i, o = backend.inputs[0], backend.outputs[0]
    meta = read_metadata(inp.model_file)
    meta.preset = preset.name
    meta.input = TensorSpec([int(v) for v in i.shape], str(np.dtype(i.dtype)), i.scale, i.zero_point)
    meta.output = TensorSpec([int(v) for v in o.shape], str(np.dtype(o.dtype)), o.scale, o.zero_point)
    meta.source = {**meta.source, "model": inp.model_file.name, "sha256": sha256_file(inp.model_file)}
    meta.versions = {**meta.versions, **_versions()}
    meta.extra = {"description": preset.description, **extra}
    return meta


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"edgetune": __version__}
    for dist in ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "tensorflow-model-optimization", "ai-edge-litert"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def verify_and_place(inp: Inputs, cfg: ConvertConfig, preset: Preset, tmp_model: Path, seconds: float, extra: dict, export: Path) -> ExportRow:
    """Metadata, load check and parity for a written model file; rename into export/ when it passes."""
    from edgetune.runtime import Predictor

    data = tmp_model.read_bytes()
    row = ExportRow(preset.name, size_bytes=len(data), gzip_bytes=len(gzip.compress(data, 9)), seconds=round(seconds, 1))
    tmp_json = tmp_model.with_suffix(".json")
    try:
        conversion = {"seconds": row.seconds, "size_bytes": row.size_bytes, "gzip_bytes": row.gzip_bytes}
        write_metadata(tmp_json, _metadata(inp, preset, tmp_model, {**extra, "conversion": conversion}))
        predictor = Predictor.from_path(tmp_model, threads=None)
        probs = np.concatenate([predictor.predict(inp.test_x[i:i + 1]) for i in range(len(inp.test_x))])
        row.parity = parity(probs, inp.keras_probs, inp.test_y)
        meta = read_metadata(tmp_json)
        floor = cfg.pruned_floor if preset.pruned else cfg.int8_floor if preset.integer else cfg.float_floor
        meta.extra["parity"] = {**row.parity, "floor": floor, "test_split": "splits/test.txt"}
        write_metadata(tmp_json, meta)
    except Exception as exc:
        tmp_model.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
        return ExportRow(preset.name, status="error", detail=f"load/parity check failed: {exc}")
    dest = export if row.parity["agreement"] >= floor else export / "failed"
    if dest != export:
        row.status, row.detail = "failed", f"agreement {row.parity['agreement']:.4f} < floor {floor}"
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / f"{preset.name}{preset.suffix}"
    os.replace(tmp_json, final.with_suffix(".json"))
    os.replace(tmp_model, final)
    row.path = str(final)
    return row


def _export_simple(inp: Inputs, preset: Preset, out: Path) -> dict:
    """Produce one model file for a converter preset; returns quantization details for the metadata."""
    from edgetune.convert import onnx_export, tflite

    name = preset.name
    if name.startswith("tflite_"):
        kind = name.removeprefix("tflite_")
        calibration = inp.calibration if kind.startswith("int8") else None
        out.write_bytes(tflite.convert_saved_model(inp.saved_model, kind, calibration))
        return {"quantization": {"method": kind, "calibration_images": len(inp.calibration) if calibration is not None else 0}}
    fp32 = out.parent / f".{name}.fp32.onnx"
    try:
        onnx_export.to_onnx(inp.saved_model, fp32 if name != "onnx_fp32" else out)
        if name == "onnx_int8":
            onnx_export.quantize_static_qdq(fp32, out, inp.calibration)
            return {"quantization": {"method": "static QDQ int8, per-channel weights, MinMax", "calibration_images": len(inp.calibration)}}
        if name == "onnx_dynamic":
            kept_float = onnx_export.quantize_dynamic_int8(fp32, out)
            return {"quantization": {"method": "dynamic: per-channel int8 weights, activations at run time",
                                     "float_nodes": f"{len(kept_float)} depthwise convolutions"}}
        return {"quantization": {"method": "none", "opset": onnx_export.OPSET}}
    finally:
        fp32.unlink(missing_ok=True)


def _run_tfmot(inp: Inputs, cfg: ConvertConfig, wanted: list[Preset], tmp: Path, export: Path) -> tuple[dict[str, Path], dict, float]:
    """QAT / pruning presets in one tfmot subprocess; returns their files, its report and its time."""
    from edgetune.train.data import load_images
    from edgetune.train.model import BASE, LOGITS

    model = inp.keras_model
    weights = {}
    for layer in [*model.get_layer(BASE).layers, model.get_layer(LOGITS)]:
        for i, w in enumerate(layer.get_weights()):
            weights[f"{layer.name}/{i}"] = w
    np.savez(tmp / "weights.npz", **weights)
    items = _sample(inp.train_files, cfg.qat_images, cfg.seed + 1)
    print(f"loading {len(items)} training images for QAT/pruning", file=sys.stderr)
    np.save(tmp / "train_x.npy", load_images([p for p, _ in items], tuple(inp.meta.preprocessing.size)))
    units = int(model.output_shape[-1])
    y = np.array([l for _, l in items])
    np.save(tmp / "train_y.npy", y.astype("float32").reshape(-1, 1) if units == 1 else y.astype("int32"))
    np.save(tmp / "calibration.npy", inp.calibration)
    check = inp.test_x[:4]
    np.save(tmp / "check_x.npy", check)
    from edgetune.train.model import deployment_model

    np.save(tmp / "check_logits.npy", deployment_model(model).predict(check, verbose=0))
    outputs = {TFMOT_PRESETS[p.name]: str(export / f".{p.name}.tmp.tflite") for p in wanted}
    job = {"spec": {"image_size": list(inp.meta.preprocessing.size), "alpha": _alpha(inp), "units": units,
                    "dropout": float(model.get_layer("dropout").rate)},
           "weights": str(tmp / "weights.npz"), "train_x": str(tmp / "train_x.npy"), "train_y": str(tmp / "train_y.npy"),
           "calibration": str(tmp / "calibration.npy"), "check_x": str(tmp / "check_x.npy"),
           "check_logits": str(tmp / "check_logits.npy"), "outputs": outputs, "qat_epochs": cfg.qat_epochs,
           "qat_learning_rate": cfg.qat_learning_rate, "sparsity": cfg.sparsity, "prune_epochs": cfg.prune_epochs,
           "prune_learning_rate": cfg.prune_learning_rate, "prune_min_weights": cfg.prune_min_weights, "seed": cfg.seed,
           "report": str(tmp / "tfmot_report.json")}
    (tmp / "job.json").write_text(json.dumps(job))
    t0 = time.perf_counter()
    log = tmp / "tfmot.log"
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "edgetune.convert._tfmot_worker", str(tmp / "job.json")],
                              stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(line for line in log.read_text().splitlines() if "Error" in line or "error" in line)[-800:]
        raise RuntimeError(f"tfmot worker failed (exit {proc.returncode}): {tail or log.read_text()[-800:]}")
    return {k: Path(v) for k, v in outputs.items()}, json.loads((tmp / "tfmot_report.json").read_text()), seconds


def _alpha(inp: Inputs) -> float:
    arch = inp.meta.source.get("architecture", "")
    if "alpha=" in arch:
        return float(arch.split("alpha=")[1].split(",")[0])
    return 1.0


def convert_run(cfg: ConvertConfig) -> list[ExportRow]:
    """Export every requested preset of a run; returns one row per preset (see ExportRow.status)."""
    cfg.validate()
    presets = resolve(cfg.preset)
    rows: list[ExportRow] = []
    with tempfile.TemporaryDirectory(prefix="edgetune-convert-") as tmp_name:
        tmp = Path(tmp_name)
        inp = prepare(cfg, tmp)
        export = inp.run / "export"
        export.mkdir(exist_ok=True)
        for stale in export.glob(".*.tmp.*"):
            stale.unlink()  # leftovers of an interrupted conversion
        simple = [p for p in presets if p.name not in TFMOT_PRESETS]
        tfmot = [p for p in presets if p.name in TFMOT_PRESETS]
        from edgetune._progress import progress_bar

        for preset in progress_bar(simple, total=len(simple), desc="convert", unit="preset"):
            tmp_model = export / f".{preset.name}.tmp{preset.suffix}"
            t0 = time.perf_counter()
            try:
                extra = _export_simple(inp, preset, tmp_model)
            except Exception as exc:
                tmp_model.unlink(missing_ok=True)
                rows.append(ExportRow(preset.name, status="error", detail=f"converter failed: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__}"))
                continue
            rows.append(verify_and_place(inp, cfg, preset, tmp_model, time.perf_counter() - t0, extra, export))
        if tfmot:
            try:
                files, report, seconds = _run_tfmot(inp, cfg, tfmot, tmp, export)
            except Exception as exc:
                rows += [ExportRow(p.name, status="error", detail=str(exc)[:500]) for p in tfmot]
                files = {}
            for preset in tfmot:
                path = files.get(TFMOT_PRESETS[preset.name])
                if path is None or not path.is_file():
                    continue
                method = TFMOT_PRESETS[preset.name]
                part = "qat" if method == "qat_int8" else "prune"
                settings = ({"qat_epochs": cfg.qat_epochs, "qat_learning_rate": cfg.qat_learning_rate} if part == "qat" else
                            {"sparsity_target": cfg.sparsity, "prune_epochs": cfg.prune_epochs,
                             "prune_learning_rate": cfg.prune_learning_rate, "prune_min_weights": cfg.prune_min_weights})
                extra = {"quantization": {"method": method, "calibration_images": len(inp.calibration), **settings,
                                          "rebuild_max_abs_diff": report.get("rebuild_max_abs_diff"), **report.get(part, {})}}
                rows.append(verify_and_place(inp, cfg, preset, path, seconds, extra, export))
        write_json_atomic(export / "convert_report.json", {"config": config_to_dict(cfg), "rows": [r.__dict__ for r in rows]})
    order = {p.name: i for i, p in enumerate(PRESETS.values())}
    return sorted(rows, key=lambda r: order[r.preset])


def summary_table(rows: list[ExportRow]) -> str:
    """Markdown: preset, status, size, gzip size, accuracy, Δ points, agreement, max |Δp|, seconds."""
    lines = ["| preset | status | size KB | gzip KB | accuracy | Δ points | agreement | max abs Δp | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p = r.parity
        if p:
            lines.append(f"| {r.preset} | {r.status} | {r.size_bytes / 1024:.0f} | {r.gzip_bytes / 1024:.0f} | {p['accuracy']:.4f} | "
                         f"{-p['accuracy_drop_points']:+.2f} | {p['agreement']:.4f} | {p['max_abs_dprob']:.4f} | {r.seconds:.1f} |")
        else:
            lines.append(f"| {r.preset} | {r.status} | | | | | | | |")
    return "\n".join(lines)
