"""`convert_run`: every preset through one wrapper — export, time, load check, parity gate, flips, metadata.

Each model is written under a temporary name in `export/`, loaded by the edgetune runtime (the same
code a Raspberry Pi runs), compared with the Keras model on every held-out image of the run, judged by
the parity gate shared with bench (`edgetune.benchmarks.parity`: pass, fail or inconclusive), and
renamed to `export/<preset>.tflite|.onnx` (+ `<preset>.json`) only then. A failing preset goes to
`export/failed/` and takes the place of any older passing copy; an inconclusive one stays in `export/`
with its verdict in its JSON. `convert_report.json` is rewritten after every preset, so an
interrupted convert can be finished (`done_presets`).
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetune import UserError, __version__
from edgetune.contract import ModelMetadata, TensorSpec, sha256_file, write_metadata
from edgetune.convert.config import ConvertConfig
from edgetune.convert.embed import embed_metadata
from edgetune.convert.inputs import Inputs, prepare
from edgetune.convert.presets import PRESETS, Preset, resolve
from edgetune.convert.report import FLIPS_DIR, open_export, order_rows, summary_table, write_report
from edgetune.convert.tfmot import WORKER_OUTPUTS as TFMOT_PRESETS

VERSIONED = ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "tensorflow-model-optimization", "ai-edge-litert",
             "mediapipe")

__all__ = ["ExportRow", "convert_run", "summary_table"]


@dataclass
class ExportRow:
    """One preset's outcome: what the summary table, the JSON and the exit code are made of."""

    preset: str
    status: str = "ok"
    """ok (passed the gate) | inconclusive (too few images to judge; kept in export/) | failed (export/failed/)
    | error (the converter or the load check failed)."""
    path: str | None = None
    size_bytes: int = 0
    gzip_bytes: int = 0
    seconds: float = 0.0
    parity: dict = field(default_factory=dict)
    """The shared parity row (`edgetune.benchmarks.parity.ParityRow.to_dict()`) on the held-out images."""
    detail: str = ""
    """Why it failed, was inconclusive or errored (the gate's reason)."""
    flips_sheet: str | None = None
    integer: bool = False
    embedded: dict = field(default_factory=dict)
    """What went inside the model file (standard TFLite metadata or why not, ONNX metadata_props)."""


def _metadata(inp: Inputs, preset: Preset, model_path: Path, extra: dict) -> ModelMetadata:
    from edgetune.runtime import open_backend
    from edgetune.versions import package_versions

    backend = open_backend(model_path, threads=1)
    i, o = backend.inputs[0], backend.outputs[0]
    meta = inp.export_metadata()
    meta.preset = preset.name
    meta.input = TensorSpec([int(v) for v in i.shape], str(np.dtype(i.dtype)), i.scale, i.zero_point)
    meta.output = TensorSpec([int(v) for v in o.shape], str(np.dtype(o.dtype)), o.scale, o.zero_point)
    meta.source = {**meta.source, "model": inp.model_file.name, "sha256": sha256_file(inp.model_file)}
    meta.versions = {**meta.versions, "edgetune": __version__, **package_versions(VERSIONED)}
    meta.extra = {"description": preset.description, **extra}
    return meta


def predict_heldout(model_path: Path, meta: ModelMetadata, inp: Inputs, threads: int | None = None) -> np.ndarray:
    """The export's probabilities on the held-out images, through the edgetune runtime."""
    from edgetune.runtime import Predictor, open_backend

    predictor = Predictor(open_backend(model_path, threads=threads), meta, path=model_path)
    return np.concatenate([predictor.predict(inp.heldout_x[i:i + 32]) for i in range(0, len(inp.heldout_x), 32)])


def judge(inp: Inputs, cfg: ConvertConfig, preset: Preset, probs: np.ndarray):
    """The shared parity row of one export on the held-out images, with this preset's floor and the budget."""
    from edgetune.benchmarks.parity import parity_row

    floor = cfg.pruned_floor if preset.pruned else cfg.int8_floor if preset.integer else cfg.float_floor
    return parity_row(preset.name, probs, inp.heldout_y, inp.labels, inp.keras_probs, floor=floor, max_drop=cfg.max_drop)


def _place(export: Path, preset: Preset, verdict: str) -> Path:
    """Where a judged model goes; the other place's copy of the same preset (now stale) is removed."""
    failed = verdict == "fail"
    dest, stale = (export / "failed", export) if failed else (export, export / "failed")
    for suffix in (preset.suffix, ".json"):
        (stale / f"{preset.name}{suffix}").unlink(missing_ok=True)
    (stale / FLIPS_DIR / f"{preset.name}.png").unlink(missing_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    return dest / f"{preset.name}{preset.suffix}"


def _flips(inp: Inputs, preset: Preset, probs: np.ndarray, final: Path, agreement: float) -> str | None:
    """The contact sheet of flipped held-out images beside the export; its path relative to the JSON."""
    from edgetune.convert.flips import write_flips_sheet

    out = final.parent / FLIPS_DIR / f"{preset.name}.png"
    out.unlink(missing_ok=True)
    title = f"{preset.name} (agreement {agreement * 100:.1f}%)"
    sheet = write_flips_sheet(out, inp.heldout_x, inp.heldout_files, inp.keras_probs, probs, inp.labels, title)
    return f"{FLIPS_DIR}/{sheet.name}" if sheet else None


def verify_and_place(inp: Inputs, cfg: ConvertConfig, preset: Preset, tmp_model: Path, seconds: float, extra: dict,
                     export: Path) -> ExportRow:
    """Metadata, load check, parity gate and flips for a written model file; renamed into export/ (or failed/)."""
    tmp_json = tmp_model.with_suffix(".json")
    try:
        meta = _metadata(inp, preset, tmp_model, extra)
        embedded = embed_metadata(tmp_model, meta)  # before sizing and parity: they describe the file that ships
        data = tmp_model.read_bytes()
        row = ExportRow(preset.name, size_bytes=len(data), gzip_bytes=len(gzip.compress(data, 9)),
                        seconds=round(seconds, 1), integer=preset.integer)
        meta.extra["conversion"] = {"seconds": row.seconds, "size_bytes": row.size_bytes, "gzip_bytes": row.gzip_bytes}
        meta.extra["embedded"] = row.embedded = embedded
        probs = predict_heldout(tmp_model, meta, inp)
        parity = judge(inp, cfg, preset, probs)
    except Exception as exc:  # noqa: BLE001 - any failure of a converted model is that preset's error row
        tmp_model.unlink(missing_ok=True)
        return ExportRow(preset.name, status="error", detail=f"load/parity check failed: {_first_line(exc)}", integer=preset.integer)
    row.parity = {k: v for k, v in parity.to_dict().items() if k != "flip_indices"}
    row.status = {"pass": "ok", "fail": "failed", "inconclusive": "inconclusive"}[parity.verdict]
    row.detail = "" if parity.verdict == "pass" else parity.reason
    final = _place(export, preset, parity.verdict)
    if preset.integer:
        row.flips_sheet = _flips(inp, preset, probs, final, parity.agreement)
    meta.extra["parity"] = {**row.parity, "images": " + ".join(inp.heldout_splits), "flips_sheet": row.flips_sheet}
    write_metadata(tmp_json, meta)
    os.replace(tmp_json, final.with_suffix(".json"))
    os.replace(tmp_model, final)
    row.path = str(final)
    return row


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


def _export_simple(inp: Inputs, preset: Preset, out: Path, cfg: ConvertConfig) -> dict:
    """Produce one model file for a converter preset; returns quantization details for the metadata."""
    from edgetune.convert import onnx_export, tflite

    name = preset.name
    if name == "tflite_int8_ac":
        from edgetune.convert.ac_preset import export_int8_ac

        return export_int8_ac(inp, cfg, preset, out)
    if name.startswith("tflite_"):
        kind = name.removeprefix("tflite_")
        integer = kind.startswith("int8")
        source, how = inp.int8_source(cfg.bias_correction, cfg.weight_rounding, cfg.fold_preprocessing) if integer else (inp.saved_model, {})
        out.write_bytes(tflite.convert_saved_model(source, kind, inp.calibration if integer else None))
        return {"quantization": {"method": kind, **_calibration_info(inp, cfg, integer), **how}}
    fp32 = out.parent / f".{name}.fp32.onnx"
    timeout = cfg.worker_timeout or None
    try:
        onnx_export.to_onnx(inp.saved_model, fp32 if name != "onnx_fp32" else out, timeout=timeout)
        if name == "onnx_int8":
            onnx_export.quantize_static_qdq(fp32, out, inp.calibration)
            return {"quantization": {"method": "static QDQ int8, per-channel weights, MinMax", **_calibration_info(inp, cfg, True)}}
        if name == "onnx_dynamic":
            kept_float = onnx_export.quantize_dynamic_int8(fp32, out)
            return {"quantization": {"method": "dynamic: per-channel int8 weights, activations at run time",
                                     "float_nodes": f"{len(kept_float)} depthwise convolutions"}}
        return {"quantization": {"method": "none", "opset": onnx_export.OPSET}}
    finally:
        fp32.unlink(missing_ok=True)


def _calibration_info(inp: Inputs, cfg: ConvertConfig, calibrated: bool) -> dict:
    if not calibrated:
        return {"calibration_images": 0}
    return {"calibration_images": len(inp.calibration), "calibration_sampling": cfg.calibration_sampling}


def _convert_simple(inp: Inputs, cfg: ConvertConfig, preset: Preset, export: Path) -> ExportRow:
    tmp_model = export / f".{preset.name}.tmp{preset.suffix}"
    t0 = time.perf_counter()
    try:
        extra = _export_simple(inp, preset, tmp_model, cfg)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a converter that fails is that preset's error row
        tmp_model.unlink(missing_ok=True)
        return ExportRow(preset.name, status="error", detail=f"converter failed: {_first_line(exc)}", integer=preset.integer)
    return verify_and_place(inp, cfg, preset, tmp_model, time.perf_counter() - t0, extra, export)


def _convert_tfmot(inp: Inputs, cfg: ConvertConfig, wanted: list[Preset], tmp: Path, export: Path) -> list[ExportRow]:
    from edgetune.convert.tfmot import run_worker, settings_for

    try:
        files, report, seconds = run_worker(inp, cfg, wanted, tmp, export)
    except Exception as exc:  # noqa: BLE001 - the worker's failure is reported on each of its presets
        return [ExportRow(p.name, status="error", detail=str(exc)[:500], integer=p.integer) for p in wanted]
    rows = []
    for preset in wanted:
        path = files.get(TFMOT_PRESETS[preset.name])
        if path is None or not path.is_file():
            rows.append(ExportRow(preset.name, status="error", detail="the tfmot worker wrote no model", integer=True))
            continue
        method = TFMOT_PRESETS[preset.name]
        extra = {"quantization": {"method": method, **_calibration_info(inp, cfg, True), **settings_for(method, cfg, report)}}
        rows.append(verify_and_place(inp, cfg, preset, path, seconds, extra, export))
    return rows


def convert_run(cfg: ConvertConfig) -> list[ExportRow]:
    """Export every requested preset of a run; returns one row per preset (see ExportRow.status).

    Raises:
        UserError: Bad flags, a run that cannot be read, an export folder edgetune did not make, a file
            system that refuses the write.
    """
    cfg.validate()
    presets = resolve(cfg.preset)
    rows: list[ExportRow] = []
    with tempfile.TemporaryDirectory(prefix="edgetune-convert-") as tmp_name:
        tmp = Path(tmp_name)
        inp = prepare(cfg, tmp)
        with open_export(inp.run) as export:
            from edgetune._progress import progress_bar

            simple = [p for p in presets if p.name not in TFMOT_PRESETS]
            for preset in progress_bar(simple, total=len(simple), desc="convert", unit="preset"):
                rows.append(_convert_simple(inp, cfg, preset, export))
                write_report(export, cfg, inp, rows)
            tfmot = [p for p in presets if p.name in TFMOT_PRESETS]
            if tfmot:
                print(f"fine-tuning for {', '.join(p.name for p in tfmot)} (tfmot worker)", file=sys.stderr)
                rows += _convert_tfmot(inp, cfg, tfmot, tmp, export)
                write_report(export, cfg, inp, rows)
    return order_rows(rows, PRESETS)
